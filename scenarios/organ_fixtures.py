"""Small NIfTI folders shaped like the real BTCV, AMOS22 and TotalSegmentator distributions, built from the generated
phantoms (scenarios.organ_phantoms), for tests and for trying ``organ-nifti`` without downloading anything.

* ``btcv``: ``imagesTr/img0001.nii.gz`` + ``labelsTr/label0001.nii.gz`` (MONAI's BTCV tutorial naming), label ids
  of the btcv protocol;
* ``amos``: ``imagesTr/amos_0001.nii.gz`` + ``labelsTr/amos_0001.nii.gz``, plus two MRI-like cases numbered from 507
  (as in AMOS22) that the protocol must leave out;
* ``totalseg``: ``s0001/ct.nii.gz`` + ``s0001/segmentations/<organ>.nii.gz`` for every organ of the protocol (an
  empty mask where the phantom lacks the organ, as TotalSegmentator ships one file per class).

Organs of the protocol that the phantoms lack (esophagus, adrenal glands, lungs, heart...) are added as small
ellipsoid blobs, each with its own intensity, placed where the phantom shows no organ, so that every task of every
protocol has something to segment. Volumes are written in RAS with the protocol's target spacing, so loading them
resamples nothing.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from scenarios.organ_nifti import load_protocol
from scenarios.organ_phantoms import ORGAN_NAMES, make_case

PHANTOM_TO_PROTOCOL = {"ivc": "inferior_vena_cava"}  # the phantoms' short names; the others are the same


def save_nifti(array: np.ndarray, path: Path, spacing=(1.0, 1.0, 1.0), dtype=np.float32, affine=None) -> None:
    """Write a (slices, rows, columns) array as a RAS NIfTI volume that the loader reads back as ``array``."""
    import nibabel as nib

    data = np.ascontiguousarray(array[:, ::-1, ::-1].transpose(2, 1, 0)).astype(dtype)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, np.diag([*spacing, 1.0]) if affine is None else affine), str(path))


def phantom_organs(labels: np.ndarray) -> dict[str, np.ndarray]:
    """Protocol organ name -> boolean mask, for the organs a phantom label map shows."""
    return {PHANTOM_TO_PROTOCOL.get(name, name): labels == k for k, name in enumerate(ORGAN_NAMES, start=1)}


def add_blobs(hu: np.ndarray, labels: np.ndarray, organs: list[str]) -> dict[str, np.ndarray]:
    """Paint one small ellipsoid per organ into ``hu`` where ``labels`` shows no organ; returns their masks.

    Blob k sits on a ring around the volume's centre at angle 2πk/n, halfway up at slice depth spread over the
    volume, with an intensity of 40 + 25·(k mod 8) HU (soft tissue to contrast-enhanced vessels)."""
    D, H, W = hu.shape
    z, r, c = np.meshgrid(np.arange(D), np.arange(H), np.arange(W), indexing="ij")
    masks = {}
    for k, organ in enumerate(organs):
        angle = 2 * np.pi * k / max(1, len(organs))
        cz, cr, cc = D * (k + 1) / (len(organs) + 1), H / 2 + 0.2 * H * np.sin(angle), W / 2 + 0.2 * W * np.cos(angle)
        inside = ((z - cz) / max(1.5, D / 8)) ** 2 + ((r - cr) / (H / 14)) ** 2 + ((c - cc) / (W / 14)) ** 2 <= 1
        mask = inside & (labels == 0)
        hu[mask] = 40.0 + 25.0 * (k % 8)
        masks[organ] = mask
    return masks


def write_fixture(root: str | Path, protocol: str, cases: int = 8, size: int = 48, slices: int = 24,
                  seed: int = 0) -> Path:  # fmt: skip
    """Write ``cases`` phantom cases for ``protocol`` (btcv, amos or totalseg) under ``root``; returns ``root``."""
    root = Path(root)
    proto = load_protocol(protocol)
    spacing = proto.spacing or (1.0, 1.0, 1.0)
    for i in range(cases):
        hu, labels = make_case(seed * 1000 + i, size=size, slices=slices)
        masks = phantom_organs(labels)
        masks.update(add_blobs(hu, labels, [o for o in proto.organs if o not in masks]))
        if proto.layout == "labelmap":
            raw = np.zeros(labels.shape, dtype=np.uint8)
            for organ, mask in masks.items():
                if organ in proto.labels:
                    raw[mask] = proto.labels[organ]
            image_name, label_name = (f"img{i + 1:04d}", f"label{i + 1:04d}") if protocol == "btcv" else \
                (f"amos_{i + 1:04d}",) * 2  # fmt: skip
            save_nifti(hu, root / "imagesTr" / f"{image_name}.nii.gz", spacing)
            save_nifti(raw, root / "labelsTr" / f"{label_name}.nii.gz", spacing, np.uint8)
        else:
            case = root / f"s{i + 1:04d}"
            save_nifti(hu, case / "ct.nii.gz", spacing)
            for organ in proto.organs:
                mask = masks.get(organ, np.zeros(labels.shape, dtype=bool))
                save_nifti(mask.astype(np.uint8), case / "segmentations" / f"{organ}.nii.gz", spacing, np.uint8)
    if protocol == "amos":  # MRI cases, numbered as in AMOS22 (from 507): arbitrary units, no Hounsfield scale
        for k in (507, 508):
            hu, labels = make_case(seed * 1000 + k, size=size, slices=slices)
            raw = np.zeros(labels.shape, dtype=np.uint8)
            masks = phantom_organs(labels)
            masks.update(add_blobs(hu, labels, [o for o in proto.organs if o not in masks]))
            for organ, mask in masks.items():
                if organ in proto.labels:
                    raw[mask] = proto.labels[organ]
            save_nifti(np.clip(hu + 1000.0, 0, None) * 2.0, root / "imagesTr" / f"amos_{k:04d}.nii.gz", spacing)
            save_nifti(raw, root / "labelsTr" / f"amos_{k:04d}.nii.gz", spacing, np.uint8)
    return root
