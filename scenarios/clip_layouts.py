"""Readers for the on-disk layouts of the full-scale CLIP protocols; class names never come from folder names.

Layouts (``DIR`` is ``scenario.root``):

- **torchvision** (MTIL, clip-cifar100, X-TAIL's MNIST): the files ``torchvision.datasets.<Name>(root)`` reads,
  opened with ``download=False``, with ``root`` ZSCL's one data location ``DIR`` or a folder per dataset
  ``DIR/<dataset>``; where ZSCL makes an 80/20 split of one set (Caltech101, EuroSAT, SUN397) it is
  ``torch.utils.data.random_split`` with ``torch.Generator().manual_seed(42)``, as ZSCL does.
- **folders**: ``DIR/<dataset>/train/<k>/*`` and ``DIR/<dataset>/test/<k>/*`` with ``<k>`` the class *index* in the
  protocol's label order (names with "/" cannot be folder names); names from the protocol's list, else from
  ``DIR/<dataset>/classnames.txt`` (one name per line, in label order, as torchvision would give them).
- **coop** (X-TAIL): CoOp's ``DIR/<dataset_dir>/split_zhou_<Name>.json`` (``[impath, label, classname]`` triples)
  with images under ``<image_dir>``; FGVC-Aircraft from ``variants.txt`` and ``images_variant_{train,test}.txt``.
- **imagenet-r**: PILOT's pre-split ``DIR/imagenet-r/{train,test}/<wnid>/*`` or the official tar's
  ``DIR/imagenet-r/<wnid>/*``; names from the shipped wnid->name map.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from torch.utils.data import Dataset

from cl_suite.api import MissingData

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
# where each torchvision dataset keeps its files under its root (checked before torchvision is asked)
TORCHVISION_FILES = {
    "FGVCAircraft": "fgvc-aircraft-2013b", "Caltech101": "caltech101/101_ObjectCategories",
    "CIFAR100": "cifar-100-python", "DTD": "dtd/dtd", "EuroSAT": "eurosat/2750", "Flowers102": "flowers-102/jpg",
    "Food101": "food-101", "MNIST": "MNIST/raw", "OxfordIIITPet": "oxford-iiit-pet", "StanfordCars": "stanford_cars",
    "SUN397": "SUN397",
}  # fmt: skip


def missing(dataset: str, path: Path | str, layout: str) -> MissingData:
    return MissingData(f"dataset {dataset!r}: missing {path}; expected {layout}")


def transform(image_size: int, train: bool = False):
    """CLIP preprocessing at the backbone's size; ``train``: ZSCL's RandomResizedCrop(scale=(0.9, 1)) (mtil/clip/clip.py)."""
    from torchvision import transforms as T

    bicubic = T.InterpolationMode.BICUBIC
    head = ([T.RandomResizedCrop(image_size, scale=(0.9, 1.0), interpolation=bicubic)] if train
            else [T.Resize(image_size, interpolation=bicubic), T.CenterCrop(image_size)])  # fmt: skip
    return T.Compose([*head, lambda im: im.convert("RGB"), T.ToTensor(),
                      T.Normalize((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711))])  # fmt: skip


class ImageList(Dataset):
    """(image, label) pairs from image paths; ``targets`` holds the labels."""

    def __init__(self, items: Sequence[tuple[str, int]], transform: Callable | None = None) -> None:
        self.items, self.transform = list(items), transform
        self.targets = np.array([label for _, label in self.items], dtype=np.int64)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        from PIL import Image

        path, label = self.items[i]
        with Image.open(path) as im:
            image = im.convert("RGB")
        return (self.transform(image) if self.transform else image), label


class Picked(Dataset):
    """``indices`` of a dataset returning (PIL image, label), with its own transform and ``targets``."""

    def __init__(self, dataset: Dataset, indices: Sequence[int], labels: np.ndarray, transform: Callable) -> None:
        self.dataset, self.indices, self.transform = dataset, list(indices), transform
        self.targets = np.asarray(labels)[self.indices]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        image, label = self.dataset[self.indices[i]]
        return self.transform(image), int(label)


def labels_of(dataset) -> np.ndarray:
    for attr in ("targets", "_labels", "labels", "y"):
        if hasattr(dataset, attr):
            return np.asarray(getattr(dataset, attr))
    return np.array([int(dataset[i][1]) for i in range(len(dataset))])


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


# -- folders ---------------------------------------------------------------------------------------------------
FOLDER_LAYOUT = "{d}/train/<class index>/* and {d}/test/<class index>/*"


def has_folders(folder: Path) -> bool:
    return (folder / "train").is_dir() and (folder / "test").is_dir()


def folder_names(dataset: str, folder: Path, names: Sequence[str] | None) -> list[str]:
    """The protocol's names, else ``classnames.txt`` (needed where the protocol takes names from torchvision)."""
    if names is not None:
        return list(names)
    path = folder / "classnames.txt"
    if not path.is_file():
        raise missing(dataset, path, f"{FOLDER_LAYOUT.format(d=folder)} plus classnames.txt (one name per line, "
                      "torchvision's class names in label order)")  # fmt: skip
    return [line.rstrip("\n") for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def read_folders(dataset: str, folder: Path, names: Sequence[str], transforms) -> tuple[ImageList, ImageList]:
    out = []
    for split, tf in zip(("train", "test"), transforms):
        items = []
        for sub in sorted((folder / split).iterdir()):
            if not sub.is_dir():
                continue
            if not sub.name.isdigit() or int(sub.name) >= len(names):
                raise missing(dataset, sub, f"{FOLDER_LAYOUT.format(d=folder)} with <class index> in "
                              f"0..{len(names) - 1} (the protocol's label order)")  # fmt: skip
            items += [(str(p), int(sub.name)) for p in _images(sub)]
        out.append(ImageList(items, tf))
    return out[0], out[1]


# -- torchvision -----------------------------------------------------------------------------------------------
def check_torchvision(dataset: str, tv_name: str, roots: Path | Sequence[Path]) -> Path:
    """The first of ``roots`` holding torchvision's files of ``tv_name`` (ZSCL's one ``--data-location`` for every
    dataset, or a folder per dataset); else MissingData naming the first."""
    roots = [roots] if isinstance(roots, Path) else list(roots)
    for root in roots:
        if (root / TORCHVISION_FILES[tv_name]).exists():
            return root
    where = " or ".join(repr(str(r)) for r in roots)
    raise missing(dataset, roots[0] / TORCHVISION_FILES[tv_name], f"torchvision.datasets.{tv_name}(root={where}) files "
                  f"(download=True once online), or {FOLDER_LAYOUT.format(d=roots[-1])}")  # fmt: skip


def read_torchvision(dataset: str, tv_name: str, roots: Path | Sequence[Path], train_kwargs: dict | None,
                     test_kwargs: dict | None, transforms, *, split_seed: int = 42, split_ratio: float = 0.8):  # fmt: skip
    """(train, test, torchvision's class names). ``train_kwargs is None``: ZSCL's 80/20 ``random_split`` of the one set."""
    import torch
    from torchvision import datasets

    folder = check_torchvision(dataset, tv_name, roots)
    cls = getattr(datasets, tv_name)
    try:
        if train_kwargs is None:
            whole = cls(str(folder))
            n = len(whole)
            train_idx, test_idx = torch.utils.data.random_split(
                range(n), [int(split_ratio * n), n - int(split_ratio * n)],
                generator=torch.Generator().manual_seed(split_seed))  # fmt: skip
            labels = labels_of(whole)
            splits = (Picked(whole, list(train_idx), labels, transforms[0]),
                      Picked(whole, list(test_idx), labels, transforms[1]))  # fmt: skip
            names = getattr(whole, "classes", None) or getattr(whole, "categories", None)
        else:
            parts = [cls(str(folder), **kw) for kw in (train_kwargs, test_kwargs)]
            splits = tuple(Picked(p, range(len(p)), labels_of(p), tf) for p, tf in zip(parts, transforms))
            names = getattr(parts[0], "classes", None)
    except (RuntimeError, FileNotFoundError, OSError) as e:
        raise missing(dataset, folder, f"torchvision.datasets.{tv_name} files under it ({e})") from e
    return splits[0], splits[1], list(names or [])


# -- CoOp (X-TAIL) ---------------------------------------------------------------------------------------------
def coop_files(dataset: str, folder: Path, spec: dict) -> list[Path]:
    if "split_file" in spec:
        return [folder / spec["split_file"]]
    return [folder / spec["split_files"][k] for k in ("classes", "train", "test")]


def check_coop(dataset: str, folder: Path, spec: dict) -> None:
    for path in coop_files(dataset, folder, spec):
        if not path.is_file():
            raise missing(dataset, path, f"CoOp's layout: {path.name} in {folder} with images under "
                          f"{folder / spec['image_dir']} (CoOp DATASETS.md)")  # fmt: skip


def read_coop(dataset: str, folder: Path, spec: dict) -> tuple[list, list]:
    """(train, test) lists of ``(path, label, classname)`` as CoOp/RAIL read them."""
    check_coop(dataset, folder, spec)
    images = folder / spec["image_dir"]
    if "split_file" in spec:
        split = json.loads((folder / spec["split_file"]).read_text(encoding="utf-8"))
        return tuple([(str(images / p), int(y), c) for p, y, c in split[part]] for part in ("train", "test"))
    files = spec["split_files"]
    classes = [line.strip() for line in (folder / files["classes"]).read_text().splitlines() if line.strip()]
    index = {c: i for i, c in enumerate(classes)}
    out = []
    for part in ("train", "test"):
        items = []
        for line in (folder / files[part]).read_text().splitlines():
            if line.strip():
                image, *words = line.strip().split(" ")
                name = " ".join(words)
                if name not in index:
                    raise missing(dataset, folder / files["classes"], f"a line {name!r} in {files['classes']}")
                items.append((str(images / f"{image}.jpg"), index[name], name))
        out.append(items)
    return out[0], out[1]


def coop_class_names(train: list, suffix: str = "") -> list[str]:
    """CoOp's ``get_lab2cname`` over the (few-shot) train set: names by label, RAIL's suffix appended (EuroSAT)."""
    by_label = {label: name for _, label, name in train}
    return [by_label[label] + suffix for label in sorted(by_label)]


def _coop_draw(rng: random.Random, labels: Sequence[int], shots: int) -> list[int]:
    """CoOp's ``generate_fewshot_dataset`` (repeat=True): per label in order of first appearance,
    ``random.sample`` of ``shots`` items, or ``random.choices`` when the class has fewer."""
    tracker: dict[int, list[int]] = {}
    for i, label in enumerate(labels):
        tracker.setdefault(label, []).append(i)
    picks = []
    for items in tracker.values():
        picks += rng.sample(items, shots) if len(items) >= shots else rng.choices(items, k=shots)
    return picks


def rail_few_shot(order: Sequence[str], coop_labels: dict[str, Sequence[int]], shots: int, seed: int) -> dict[str, list[int]]:
    """The few-shot training picks of RAIL's primal_RAIL.py: one Python ``random`` stream seeded ``seed`` that
    draws, in this order, every CoOp domain once (the class-name pass), then per task its training set and,
    after training, each learned domain again (the evaluation builds). Returns the training picks per domain."""
    rng, picks = random.Random(seed), {}
    for name in order:
        if name in coop_labels:
            _coop_draw(rng, coop_labels[name], shots)
    for t, name in enumerate(order):
        if name in coop_labels:
            picks[name] = _coop_draw(rng, coop_labels[name], shots)
        for seen in order[: t + 1]:
            if seen in coop_labels:
                _coop_draw(rng, coop_labels[seen], shots)
    return picks


def numpy_few_shot(labels: np.ndarray, shots: int, seed: int) -> list[int]:
    """RAIL's FewShotDataset (MNIST): ``np.random.choice`` per class after ``np.random.seed(seed)``."""
    rng = np.random.RandomState(seed)
    picks = []
    for c in np.unique(labels):
        idx = np.where(labels == c)[0]
        picks += rng.choice(idx, shots, replace=len(idx) < shots).tolist()
    return picks


# -- ImageNet-R ------------------------------------------------------------------------------------------------
def read_imagenet_r(folder: Path, wnids: Sequence[str], transforms, split_seed: int):
    """(train, test, split description): PILOT's train/test trees, or the tar's wnid folders split 80/20 per class."""
    index = {w: i for i, w in enumerate(wnids)}

    def items(root: Path) -> list[tuple[str, int]]:
        out = []
        for wnid in wnids:
            sub = root / wnid
            if not sub.is_dir():
                raise missing("imagenet-r", sub, f"one folder per ImageNet-R wnid under {root} (200 in all)")
            out += [(str(p), index[wnid]) for p in _images(sub)]
        return out

    if has_folders(folder):
        return ImageList(items(folder / "train"), transforms[0]), ImageList(items(folder / "test"), transforms[1]), "pilot"
    whole = items(folder)
    labels = np.array([y for _, y in whole])
    rng, test = np.random.default_rng(split_seed), []
    for c in range(len(wnids)):
        idx = rng.permutation(np.flatnonzero(labels == c))
        test += idx[: max(1, round(0.2 * len(idx)))].tolist()
    is_test = np.zeros(len(whole), dtype=bool)
    is_test[test] = True
    train = [whole[i] for i in np.flatnonzero(~is_test)]
    return ImageList(train, transforms[0]), ImageList([whole[i] for i in sorted(test)], transforms[1]), "tar"
