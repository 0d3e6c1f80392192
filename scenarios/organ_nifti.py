"""NIfTI loading for full-scale organ segmentation (BTCV, AMOS, TotalSegmentator) through MONAI transforms.

Layouts, named in the protocol file (``scenarios/organ_protocols/*.yaml``):

* ``labelmap`` (BTCV, AMOS, MSD and nnU-Net raw data): one label map per case whose integer ids the protocol's
  ``labels`` name, in ``<root>/labelsTr/<case>.nii.gz`` with the image ``<root>/imagesTr/<case>.nii.gz`` (or
  ``<case>_0000.nii.gz``, nnU-Net); BTCV's own naming, ``labelsTr/label0001.nii.gz`` with ``imagesTr/img0001.nii.gz``
  (MONAI's BTCV tutorial layout), and the Synapse archive's ``label/`` + ``img/`` folders are found too.
* ``totalseg`` (TotalSegmentator): ``<root>/<case>/ct.nii.gz`` and ``<root>/<case>/segmentations/<organ>.nii.gz``,
  one binary mask per organ. A missing mask is an error unless the run allows it (``allow_missing_masks``).

A protocol may keep only its CT cases by case id (``ct_cases``: AMOS22 holds MRI cases in the same folders; its
readme says "id numbers less than 500 belong to CT data, otherwise they belong to MRI data").

Loading (:func:`load_case`): MONAI's ``LoadImaged`` (nibabel), ``Orientationd`` to RAS for image and labels together,
a check that their voxel grids (affine and shape) then agree within ``tolerance`` (else :class:`BadData`, never a
silently mixed pair), ``Spacingd`` to the target spacing (bilinear for the image, nearest for labels), and
``ScaleIntensityRanged`` clipping the protocol's CT window to [0, 1]. The same grid check runs on headers alone
(:func:`check_case`) before a run starts, so bad data is one line and exit 2.

Arrays are returned as (slices, rows, columns): axial slices from feet to head, anterior up, the patient's right on
the image's left (radiological convention, like the generated phantoms).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import yaml

from cl_suite.api import MissingData

PROTOCOL_DIR = Path(__file__).with_name("organ_protocols")
LAYOUTS = ("labelmap", "totalseg")
RAS_LABELS = (("L", "R"), ("P", "A"), ("I", "S"))  # nibabel's axis codes, stated (MONAI warns of a new default)
FOLDER_PAIRS = (("imagesTr", "labelsTr"), ("img", "label"))  # (images, labels): MSD/nnU-Net/MONAI, Synapse BTCV


class BadData(MissingData):
    """The data on disk is there but unusable as given (grids disagree, wrong shape, missing mask): one line."""


@dataclass(frozen=True)
class CTCases:
    """Which case ids are CT: the number matched by ``pattern`` (a regex with one group) is below ``below``."""

    pattern: str
    below: int
    source: str = ""

    def is_ct(self, case: str) -> bool:
        match = re.search(self.pattern, case)
        return match is not None and int(match.group(1)) < self.below


@dataclass(frozen=True)
class Protocol:
    """Which organs each task adds (explicit lists), how to find them on disk, the CT window and target spacing."""

    name: str
    layout: str
    tasks: tuple[tuple[str, ...], ...]
    labels: dict[str, int]  # labelmap layout: organ name -> id in the label files
    window: tuple[float, float] = (-200.0, 300.0)
    source: str = ""
    spacing: tuple[float, float, float] | None = None  # mm (x, y, z in RAS); None keeps each case's own
    spacing_source: str = ""
    ct_cases: CTCases | None = None

    @property
    def organs(self) -> tuple[str, ...]:
        return tuple(o for task in self.tasks for o in task)

    def label_source(self, organ: str) -> str:
        """Where an organ's voxels come from on disk: its id in the label map, or its mask file."""
        if self.layout == "labelmap":
            return f"label id {self.labels[organ]}"
        return f"segmentations/{organ}.nii.gz"


def available_protocols() -> list[str]:
    return sorted(p.stem for p in PROTOCOL_DIR.glob("*.yaml"))


def load_protocol(name_or_path: str) -> Protocol:
    """A bundled protocol by name (``btcv``, ``amos``, ``totalseg``) or a YAML file of the same form."""
    path = Path(name_or_path)
    if not path.suffix:
        path = PROTOCOL_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        raise ValueError(f"organ protocol {name_or_path!r} not found; bundled: {', '.join(available_protocols())}, "
                         "or give the path of a YAML file")  # fmt: skip
    data = yaml.safe_load(path.read_text())
    layout = data.get("layout")
    if layout not in LAYOUTS:
        raise ValueError(f"protocol {path}: layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    tasks = tuple(tuple(str(o) for o in task) for task in data.get("tasks") or ())
    labels = {str(k): int(v) for k, v in (data.get("labels") or {}).items()}
    organs = [o for task in tasks for o in task]
    if not tasks or any(not t for t in tasks):
        raise ValueError(f"protocol {path}: 'tasks' must be a non-empty list of non-empty organ lists")
    if len(set(organs)) != len(organs):
        raise ValueError(f"protocol {path}: an organ appears in more than one task")
    missing = [o for o in organs if o not in labels]
    if layout == "labelmap" and missing:
        raise ValueError(f"protocol {path}: organs {missing} have no id in 'labels'")
    low, high = data.get("window", (-200.0, 300.0))
    spacing = data.get("spacing")
    if spacing is not None and (len(spacing) != 3 or min(spacing) <= 0):
        raise ValueError(f"protocol {path}: 'spacing' must be 3 positive sizes in mm, got {spacing!r}")
    ct = data.get("ct_cases")
    ct_cases = CTCases(str(ct["pattern"]), int(ct["below"]), str(ct.get("source", ""))) if ct else None
    return Protocol(str(data.get("name", path.stem)), layout, tasks, labels, (float(low), float(high)),
                    str(data.get("source", "")), tuple(float(s) for s in spacing) if spacing else None,
                    str(data.get("spacing_source", "")), ct_cases)  # fmt: skip


@dataclass(frozen=True)
class CaseFiles:
    case: str
    image: Path
    labels: Path  # the label map (labelmap layout) or the segmentations folder (totalseg layout)


def _nifti(folder: Path, stem: str) -> Path | None:
    return next((p for p in (folder / f"{stem}.nii.gz", folder / f"{stem}.nii") if p.is_file()), None)


def _image_stems(label_stem: str) -> list[str]:
    """Image names that pair with a label name: the same, nnU-Net's ``_0000``, and BTCV's ``label…`` -> ``img…``."""
    stems = [label_stem, f"{label_stem}_0000"]
    if label_stem.startswith("label"):
        stems += [f"img{label_stem[5:]}", f"image{label_stem[5:]}"]
    return stems


def find_cases(root: str | Path, protocol: Protocol) -> list[CaseFiles]:
    """Every case under ``root`` that has both an image and labels, sorted by case id (CT filter not applied)."""
    root = Path(root)
    if not root.is_dir():
        raise MissingData(f"dataset folder {root} not found; download {protocol.source or protocol.name} "
                          f"and point scenario.root at it (layout {protocol.layout!r})")  # fmt: skip
    cases = []
    if protocol.layout == "labelmap":
        for images, labels in FOLDER_PAIRS:
            for label in sorted((root / labels).glob("*.nii*")):
                stem = label.name.split(".nii")[0]
                image = next((p for s in _image_stems(stem) if (p := _nifti(root / images, s))), None)
                if image is not None:
                    cases.append(CaseFiles(stem, image, label))
            if cases:
                break
    else:
        for folder in sorted(p for p in root.iterdir() if p.is_dir()):
            image = _nifti(folder, "ct")
            if image is not None and (folder / "segmentations").is_dir():
                cases.append(CaseFiles(folder.name, image, folder / "segmentations"))
    if not cases:
        expected = ("imagesTr/<case>.nii.gz + labelsTr/<case>.nii.gz (or imagesTr/img0001 + labelsTr/label0001)"
                    if protocol.layout == "labelmap" else "<case>/ct.nii.gz + <case>/segmentations/<organ>.nii.gz")  # fmt: skip
        raise MissingData(f"no cases found under {root}; expected {expected}")
    return cases


def split_modality(cases: list[CaseFiles], protocol: Protocol) -> tuple[list[CaseFiles], list[CaseFiles]]:
    """(CT cases, other cases) by the protocol's ``ct_cases`` rule; every case is CT without one."""
    if protocol.ct_cases is None:
        return list(cases), []
    ct = [c for c in cases if protocol.ct_cases.is_ct(c.case)]
    return ct, [c for c in cases if not protocol.ct_cases.is_ct(c.case)]


def mask_paths(files: CaseFiles, organs: list[str], allow_missing: bool) -> dict[str, Path]:
    """TotalSegmentator: each organ's mask file; a missing one is :class:`BadData` unless ``allow_missing``."""
    found = {o: _nifti(files.labels, o) for o in organs}
    missing = [o for o, p in found.items() if p is None]
    if missing and not allow_missing:
        raise BadData(f"case {files.case}: no mask for {', '.join(missing)} in {files.labels} "
                      "(set scenario.allow_missing_masks=true to score such cases without those organs)")  # fmt: skip
    return {o: p for o, p in found.items() if p is not None}


def canonical_grid(path: Path) -> tuple[tuple[int, ...], np.ndarray]:
    """(shape, affine) of a volume's voxel grid once reoriented to RAS, from its header alone."""
    import nibabel as nib
    from nibabel.orientations import inv_ornt_aff, io_orientation

    image = nib.load(str(path))
    shape = tuple(int(s) for s in image.shape)
    if len(shape) == 4 and shape[3] == 1:
        shape = shape[:3]
    if len(shape) != 3:
        raise BadData(f"{path}: expected a 3D volume, got shape {shape}")
    ornt = io_orientation(image.affine)
    affine = image.affine @ inv_ornt_aff(ornt, shape)
    return tuple(shape[int(axis)] for axis in ornt[:, 0]), affine


def _compare(case: str, what: str, image: tuple, other: tuple, tolerance: float) -> None:
    (shape_a, aff_a), (shape_b, aff_b) = image, other
    if shape_a != shape_b:
        raise BadData(f"case {case}: {what} has shape {shape_b} in RAS, the image {shape_a}")
    diff = float(np.abs(aff_a - aff_b).max())
    if diff > tolerance:
        raise BadData(f"case {case}: {what} and image voxel grids disagree by up to {diff:.3g} mm after reorienting "
                      f"to RAS (tolerance {tolerance:g}; scenario.affine_tolerance)")  # fmt: skip


def check_case(files: CaseFiles, protocol: Protocol, organs: list[str], *, tolerance: float,
               allow_missing: bool) -> None:  # fmt: skip
    """Header-only checks of one case (no voxel data read): labels on the image's grid, masks present."""
    image = canonical_grid(files.image)
    if protocol.layout == "labelmap":
        _compare(files.case, "label map", image, canonical_grid(files.labels), tolerance)
    else:
        for organ, path in mask_paths(files, organs, allow_missing).items():
            _compare(files.case, f"mask {organ}", image, canonical_grid(path), tolerance)


@dataclass
class Volume:
    """One loaded case: windowed image in [0, 1] and labels (suite ids), (slices, rows, columns), spacing in mm."""

    image: np.ndarray
    labels: np.ndarray
    spacing: tuple[float, float, float]


def _to_slices_order(volume) -> np.ndarray:
    """MONAI's (1, x, y, z) in RAS -> (z, y, x) with rows anterior-up and the patient's right on the left."""
    data = np.asarray(volume)[0]
    return np.ascontiguousarray(data.transpose(2, 1, 0)[:, ::-1, ::-1])


def load_case(files: CaseFiles, protocol: Protocol, organ_ids: dict[str, int], *, spacing, tolerance: float = 1e-3,
              allow_missing: bool = False) -> Volume:  # fmt: skip
    """Read, reorient, check, resample and window one case with MONAI; labels in the suite's global organ ids.

    ``spacing``: target (x, y, z) in mm, or None to keep the case's own voxel size.
    """
    from monai.transforms import Compose, LoadImaged, Orientationd, ScaleIntensityRanged, Spacingd

    if protocol.layout == "labelmap":
        sources = {"label": files.labels}
    else:
        sources = {f"mask_{o}": p for o, p in mask_paths(files, list(organ_ids), allow_missing).items()}
    keys = ["image", *sources]
    data = Compose([LoadImaged(keys, image_only=True, ensure_channel_first=True), Orientationd(keys, axcodes="RAS", labels=RAS_LABELS)])(
        {"image": str(files.image), **{k: str(p) for k, p in sources.items()}})
    grid = (tuple(data["image"].shape[1:]), np.asarray(data["image"].affine, dtype=float))
    for key in sources:
        other = (tuple(data[key].shape[1:]), np.asarray(data[key].affine, dtype=float))
        _compare(files.case, "label map" if key == "label" else f"mask {key[5:]}", grid, other, tolerance)
    low, high = protocol.window
    steps = [ScaleIntensityRanged("image", a_min=low, a_max=high, b_min=0.0, b_max=1.0, clip=True)]
    if spacing is not None:
        steps.insert(0, Spacingd(keys, pixdim=tuple(spacing), mode=["bilinear"] + ["nearest"] * len(sources)))
    data = Compose(steps)(data)
    image = _to_slices_order(data["image"]).astype(np.float32)
    labels = np.zeros(image.shape, dtype=np.int64)
    if protocol.layout == "labelmap":
        raw = np.rint(_to_slices_order(data["label"])).astype(np.int64)
        for organ, gid in organ_ids.items():
            labels[raw == protocol.labels[organ]] = gid
    else:
        for organ, gid in organ_ids.items():
            if f"mask_{organ}" in data:
                labels[_to_slices_order(data[f"mask_{organ}"]) > 0.5] = gid
    sx, sy, sz = np.sqrt((np.asarray(data["image"].affine, dtype=float)[:3, :3] ** 2).sum(0))
    return Volume(image, labels, (float(sz), float(sy), float(sx)))


def to_slices(image: np.ndarray, labels: np.ndarray, size: int,
              keep: np.ndarray | None = None) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """Windowed slices resized to a square: x (N, 1, size, size) and y (N, size, size); ``keep`` selects slices."""
    if keep is not None:
        image, labels = image[keep], labels[keep]
    x = torch.from_numpy(np.ascontiguousarray(image)).float()[:, None]
    y = torch.from_numpy(np.ascontiguousarray(labels))[:, None].float()
    if x.shape[-2:] != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
        y = F.interpolate(y, size=(size, size), mode="nearest")
    return x, y[:, 0].long()


def slices_with(labels: np.ndarray, organ_ids: list[int], margin: int) -> np.ndarray:
    """Indices of the slices that show any of ``organ_ids``, widened by ``margin`` slices either side."""
    present = np.isin(labels, organ_ids).any(axis=(1, 2))
    if margin > 0 and present.any():
        present = np.convolve(present, np.ones(2 * margin + 1), mode="same") > 0
    return np.flatnonzero(present)
