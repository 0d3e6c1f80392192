"""Image pools for the FSCIL scenarios: CIFAR-100 (torchvision), miniImageNet and CUB-200 (local folders laid out
as CEC's loaders expect), and the generated fscil-tiny images.

Each loader returns an :class:`ImageSource`: the labels of the training and test pools, a way to build a Dataset
of some of their images, and ``resolve``, which maps the lines of a ``session_<t>.txt`` file to training images.
Folder layouts follow CEC (github.com/icoz69/CEC-CVPR2021, ``dataloader/``), so its index files apply unchanged.
Nothing downloads unless the user sets ``download=true`` for CIFAR-100.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
CIFAR_MEAN, CIFAR_STD = (0.507, 0.487, 0.441), (0.267, 0.256, 0.276)


class ArrayImages(Dataset):
    """Items ``{"x": (3, H, W) float, "y": label}`` from uint8 HWC arrays held in memory."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform: Callable | None = None) -> None:
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        x = torch.from_numpy(np.ascontiguousarray(self.images[i])).permute(2, 0, 1).float() / 255.0
        if self.transform is not None:
            x = self.transform(x)
        return {"x": x, "y": torch.tensor(int(self.labels[i]))}


class FileImages(Dataset):
    """Items ``{"x": (3, H, W) float, "y": label}`` from image files, read lazily with PIL."""

    def __init__(self, paths: Sequence[Path], labels: np.ndarray, transform: Callable) -> None:
        self.paths, self.labels, self.transform = list(paths), labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        from PIL import Image

        with Image.open(self.paths[i]) as img:
            x = self.transform(img.convert("RGB"))
        return {"x": x, "y": torch.tensor(int(self.labels[i]))}


@dataclass
class ImageSource:
    """The training and test pools of one dataset. ``subset(split, positions, augment)`` builds a Dataset;
    ``resolve(lines)`` maps index-file lines to positions in the training pool."""

    train_labels: np.ndarray
    test_labels: np.ndarray
    subset: Callable[[str, np.ndarray, bool], Dataset]
    resolve: Callable[[list[str]], np.ndarray]
    class_names: list[str]


def tensor_transform(size: int, mean, std, augment: bool) -> Callable:
    """For images already tensors (CIFAR): padded random crop and flip when augmenting, then normalise."""
    from torchvision import transforms as T

    steps = [T.Resize(size, antialias=True)] if size != 32 else []
    if augment:
        steps += [T.RandomCrop(size, padding=size // 8), T.RandomHorizontalFlip()]
    return T.Compose([*steps, T.Normalize(mean, std)])


def pil_transform(size: int, mean, std, augment: bool) -> Callable:
    """For image files: resize a little larger, crop (random when augmenting) to ``size``, normalise."""
    from torchvision import transforms as T

    crop = [T.RandomCrop(size), T.RandomHorizontalFlip()] if augment else [T.CenterCrop(size)]
    return T.Compose([T.Resize(round(size * 1.1)), *crop, T.ToTensor(), T.Normalize(mean, std)])


def _int_resolver(pool_size: int, what: str) -> Callable[[list[str]], np.ndarray]:
    def resolve(lines: list[str]) -> np.ndarray:
        try:
            idx = np.array([int(line) for line in lines], dtype=np.int64)
        except ValueError as e:
            raise ValueError(f"{what} index files hold one integer per line: {e}") from e
        if len(idx) and (idx.min() < 0 or idx.max() >= pool_size):
            raise ValueError(f"{what} index out of range 0..{pool_size - 1}: {int(idx.min())}..{int(idx.max())}")
        return idx

    return resolve


def _key_resolver(positions: dict[str, int], key: Callable[[str], str], what: str):
    def resolve(lines: list[str]) -> np.ndarray:
        missing = [line for line in lines if key(line) not in positions]
        if missing:
            raise FileNotFoundError(f"{what}: {len(missing)} listed images are not in the training split, "
                                    f"e.g. {missing[0]!r}")  # fmt: skip
        return np.array([positions[key(line)] for line in lines], dtype=np.int64)

    return resolve


def synthetic_source(per_class_train: int, per_class_test: int, size: int, seed: int) -> ImageSource:
    """fscil-tiny's generated images (scenarios.fscil_synth); train and test pools drawn from distinct seeds."""
    from scenarios import fscil_synth

    train_x, train_y = fscil_synth.generate(per_class_train, size, seed)
    test_x, test_y = fscil_synth.generate(per_class_test, size, seed + 1)
    pools = {"train": (train_x, train_y), "test": (test_x, test_y)}

    def subset(split: str, positions: np.ndarray, augment: bool) -> Dataset:
        x, y = pools[split]
        return ArrayImages(x[positions], y[positions])

    return ImageSource(train_y, test_y, subset, _int_resolver(len(train_y), "fscil-tiny"), fscil_synth.class_names())


def cifar100_source(root: str | Path, size: int = 32, download: bool = False) -> ImageSource:
    """CIFAR-100 through torchvision (``<root>/cifar-100-python``); index lines are training-set indices."""
    from torchvision.datasets import CIFAR100

    try:
        train = CIFAR100(str(root), train=True, download=download)
        test = CIFAR100(str(root), train=False, download=False)
    except RuntimeError as e:
        raise FileNotFoundError(f"CIFAR-100 not found under {Path(root) / 'cifar-100-python'} ({e}); put the python "
                                "version there or set scenario.download=true") from e  # fmt: skip
    pools = {"train": (train.data, np.asarray(train.targets)), "test": (test.data, np.asarray(test.targets))}

    def subset(split: str, positions: np.ndarray, augment: bool) -> Dataset:
        x, y = pools[split]
        return ArrayImages(x[positions], y[positions], tensor_transform(size, CIFAR_MEAN, CIFAR_STD, augment))

    resolve = _int_resolver(len(train.targets), "CIFAR-100")
    return ImageSource(pools["train"][1], pools["test"][1], subset, resolve, list(train.classes))


def _file_source(train, test, names, size, resolve) -> ImageSource:
    pools = {"train": train, "test": test}

    def subset(split: str, positions: np.ndarray, augment: bool) -> Dataset:
        paths, labels = pools[split]
        return FileImages([paths[i] for i in positions], labels[positions],
                          pil_transform(size, IMAGENET_MEAN, IMAGENET_STD, augment))  # fmt: skip

    return ImageSource(train[1], test[1], subset, resolve, names)


def _require(path: Path, what: str) -> Path:
    if not path.exists():
        raise FileNotFoundError(f"{what}: missing {path}")
    return path


def mini_imagenet_source(root: str | Path, size: int = 84) -> ImageSource:
    """miniImageNet as CEC reads it: ``<root>/miniimagenet/images/<file>.jpg`` and ``split/{train,test}.csv``
    (``filename,label`` rows). Class ids follow the order in which wnids first appear in train.csv; index lines
    name a training image by its file name (the last path component)."""
    base = Path(root).expanduser() / "miniimagenet"
    what = "miniImageNet (CEC layout: miniimagenet/images/*.jpg and miniimagenet/split/{train,test}.csv)"
    images = _require(base / "images", what)
    rows = {}
    for split in ("train", "test"):
        with open(_require(base / "split" / f"{split}.csv", what), newline="") as f:
            rows[split] = [(r[0], r[1]) for r in list(csv.reader(f))[1:] if r]
    wnids = list(dict.fromkeys(w for _, w in rows["train"]))
    label = {w: i for i, w in enumerate(wnids)}
    unknown = sorted({w for _, w in rows["test"]} - set(label))
    if unknown:
        raise ValueError(f"{what}: test.csv has classes absent from train.csv, e.g. {unknown[0]}")
    pools = {s: ([images / n for n, _ in r], np.array([label[w] for _, w in r], dtype=np.int64)) for s, r in rows.items()}
    positions = {name: i for i, (name, _) in enumerate(rows["train"])}
    resolve = _key_resolver(positions, lambda line: line.replace("\\", "/").rsplit("/", 1)[-1], "miniImageNet")
    return _file_source(pools["train"], pools["test"], wnids, size, resolve)


def cub200_source(root: str | Path, size: int = 224) -> ImageSource:
    """CUB-200-2011 from ``<root>/CUB_200_2011`` (images.txt, train_test_split.txt, image_class_labels.txt,
    images/). Class id = CUB class number - 1; index lines are paths relative to ``<root>``
    (``CUB_200_2011/images/<class folder>/<file>.jpg``)."""
    base = Path(root).expanduser() / "CUB_200_2011"
    what = "CUB-200-2011 (folder CUB_200_2011 with images.txt, train_test_split.txt, image_class_labels.txt, images/)"

    def table(name: str) -> dict[int, str]:
        lines = _require(base / name, what).read_text().split("\n")
        return {int(a): b.strip() for a, b in (line.split(" ", 1) for line in lines if line.strip())}

    image, is_train, klass = table("images.txt"), table("train_test_split.txt"), table("image_class_labels.txt")
    pools = {}
    for split, flag in (("train", "1"), ("test", "0")):
        ids = [k for k in sorted(image) if is_train[k] == flag]
        pools[split] = ([base / "images" / image[k] for k in ids], np.array([int(klass[k]) - 1 for k in ids]))
    train_ids = [k for k in sorted(image) if is_train[k] == "1"]
    positions = {image[k]: i for i, k in enumerate(train_ids)}
    names = list(table("classes.txt").values()) if (base / "classes.txt").exists() else []
    resolve = _key_resolver(positions, lambda line: line.replace("\\", "/").split("images/", 1)[-1], "CUB-200")
    return _file_source(pools["train"], pools["test"], names, size, resolve)
