"""Small NIfTI folders shaped like the real BTCV, AMOS22 and TotalSegmentator distributions, built from the generated
phantoms (scenarios.organ_phantoms), for tests and for trying ``organ-nifti`` without downloading anything.

* ``btcv``: ``imagesTr/img0001.nii.gz`` + ``labelsTr/label0001.nii.gz`` (MONAI's BTCV tutorial naming), label ids
  of the btcv protocol;
* ``amos``: ``imagesTr/amos_0001.nii.gz`` + ``labelsTr/amos_0001.nii.gz``, plus two MRI-like cases numbered from 507
  (as in AMOS22) that the protocol must leave out;
* ``totalseg``: ``s0001/ct.nii.gz`` + ``s0001/segmentations/<organ>.nii.gz`` for every organ of the protocol (an
  empty mask where the phantom lacks the organ, as TotalSegmentator ships one file per class).

Volumes are written in RAS with the protocol's target spacing, so loading them resamples nothing.
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


def write_fixture(root: str | Path, protocol: str, cases: int = 8, size: int = 48, slices: int = 24,
                  seed: int = 0) -> Path:  # fmt: skip
    """Write ``cases`` phantom cases for ``protocol`` (btcv, amos or totalseg) under ``root``; returns ``root``."""
    root = Path(root)
    proto = load_protocol(protocol)
    spacing = proto.spacing or (1.0, 1.0, 1.0)
    for i in range(cases):
        hu, labels = make_case(seed * 1000 + i, size=size, slices=slices)
        masks = phantom_organs(labels)
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
            for organ, mask in phantom_organs(labels).items():
                if organ in proto.labels:
                    raw[mask] = proto.labels[organ]
            save_nifti(np.clip(hu + 1000.0, 0, None) * 2.0, root / "imagesTr" / f"amos_{k:04d}.nii.gz", spacing)
            save_nifti(raw, root / "labelsTr" / f"amos_{k:04d}.nii.gz", spacing, np.uint8)
    return root
