"""NIfTI loading for full-scale organ segmentation: TotalSegmentator-, BTCV- and AMOS-style folders (nibabel).

Two layouts, named in the protocol file (``scenarios/organ_protocols/*.yaml``):

* ``labelmap`` (BTCV, AMOS, MSD and nnU-Net raw data): ``<root>/imagesTr/<case>.nii.gz`` (or ``<case>_0000.nii.gz``)
  and ``<root>/labelsTr/<case>.nii.gz``, one label map whose integer ids the protocol's ``labels`` name.
* ``totalseg`` (TotalSegmentator): ``<root>/<case>/ct.nii.gz`` and ``<root>/<case>/segmentations/<organ>.nii.gz``,
  one binary mask per organ.

Volumes are reoriented to RAS (``nibabel.as_closest_canonical``), cut into axial slices shown in radiological
convention (anterior up, the patient's right on the left, like the generated phantoms), windowed to [0, 1] and
resized to a square ``image_size`` (bilinear for images, nearest for labels). Simplification: in-plane spacing is
not resampled (slices are squashed to a square); nnU-Net would resample to a fixed spacing first.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import yaml

PROTOCOL_DIR = Path(__file__).with_name("organ_protocols")
LAYOUTS = ("labelmap", "totalseg")


@dataclass(frozen=True)
class Protocol:
    """Which organs each task adds (explicit lists), how to find them on disk, and the CT window."""

    name: str
    layout: str
    tasks: tuple[tuple[str, ...], ...]
    labels: dict[str, int]  # labelmap layout: organ name -> id in the label files
    window: tuple[float, float] = (-200.0, 300.0)
    source: str = ""

    @property
    def organs(self) -> tuple[str, ...]:
        return tuple(o for task in self.tasks for o in task)


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
    return Protocol(str(data.get("name", path.stem)), layout, tasks, labels, (float(low), float(high)),
                    str(data.get("source", "")))  # fmt: skip


@dataclass(frozen=True)
class CaseFiles:
    case: str
    image: Path
    labels: Path  # the label map (labelmap layout) or the segmentations folder (totalseg layout)


def find_cases(root: str | Path, protocol: Protocol) -> list[CaseFiles]:
    """The cases under ``root`` that have both an image and labels, sorted by case id."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"dataset folder {root} not found; download {protocol.source or protocol.name} "
                                f"and point scenario.root at it (layout {protocol.layout!r})")  # fmt: skip
    cases = []
    if protocol.layout == "labelmap":
        for label in sorted((root / "labelsTr").glob("*.nii*")):
            case = label.name.split(".nii")[0]
            images = [root / "imagesTr" / f"{case}{tail}{ext}" for tail in ("", "_0000") for ext in (".nii.gz", ".nii")]
            image = next((p for p in images if p.is_file()), None)
            if image is not None:
                cases.append(CaseFiles(case, image, label))
    else:
        for folder in sorted(p for p in root.iterdir() if p.is_dir()):
            image = next((p for p in (folder / "ct.nii.gz", folder / "ct.nii") if p.is_file()), None)
            if image is not None and (folder / "segmentations").is_dir():
                cases.append(CaseFiles(folder.name, image, folder / "segmentations"))
    if not cases:
        expected = ("imagesTr/<case>.nii.gz + labelsTr/<case>.nii.gz" if protocol.layout == "labelmap"
                    else "<case>/ct.nii.gz + <case>/segmentations/<organ>.nii.gz")  # fmt: skip
        raise FileNotFoundError(f"no cases found under {root}; expected {expected}")
    return cases


def _read(path: Path) -> np.ndarray:
    """A volume as (slices, rows, columns): axial slices, anterior up, the patient's right on the left."""
    import nibabel as nib

    data = np.asarray(nib.as_closest_canonical(nib.load(str(path))).dataobj)  # (x: →left… RAS, y, z)
    if data.ndim == 4 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise ValueError(f"{path}: expected a 3D volume, got shape {data.shape}")
    return np.ascontiguousarray(data.transpose(2, 1, 0)[:, ::-1, ::-1])


def read_case(files: CaseFiles, protocol: Protocol, organ_ids: dict[str, int]) -> tuple[np.ndarray, np.ndarray]:
    """(HU volume float32, label map int64 in the suite's global organ ids) for the organs in ``organ_ids``."""
    image = _read(files.image).astype(np.float32)
    labels = np.zeros(image.shape, dtype=np.int64)
    if protocol.layout == "labelmap":
        raw = _read(files.labels).astype(np.int64)
        for organ, gid in organ_ids.items():
            labels[raw == protocol.labels[organ]] = gid
    else:
        for organ, gid in organ_ids.items():
            mask = next((p for p in (files.labels / f"{organ}.nii.gz", files.labels / f"{organ}.nii") if p.is_file()),
                        None)  # fmt: skip
            if mask is not None:
                labels[_read(mask) > 0.5] = gid
    if labels.shape != image.shape:
        raise ValueError(f"case {files.case}: labels {labels.shape} do not match the image {image.shape}")
    return image, labels


def to_slices(image: np.ndarray, labels: np.ndarray, size: int, window: tuple[float, float],
              keep: np.ndarray | None = None) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """Windowed, resized slices: x (N, 1, size, size) in [0, 1] and y (N, size, size); ``keep`` selects slices."""
    if keep is not None:
        image, labels = image[keep], labels[keep]
    low, high = window
    x = torch.from_numpy((np.clip(image, low, high) - low) / (high - low)).float()[:, None]
    y = torch.from_numpy(labels)[:, None].float()
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
