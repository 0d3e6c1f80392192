"""Full-scale CLIP protocols on data the user has on disk: mtil, xtail, clip-cifar100, imagenet-r.

Protocols (../shared/reference/benchmarks.md §2, explicit lists below):
- ``mtil`` (ZSCL, Zheng et al. 2023): 11 domains, order I (alphabetical) or order II, task-incremental (``til``),
  each domain scored within its own class names; Transfer / Avg. / Last.
- ``xtail`` (RAIL, Xu et al. 2024): 10 domains (MTIL without CIFAR-100), 16 training shots per class (seeded), full
  test sets, task-agnostic prediction over the union of all class names (``dil``: fixed label space, no task id).
- ``clip-cifar100``: class-incremental B0 Inc10 in the DER/PODNet class order (ZSCL's ``cil/`` order), predicting
  over the classes seen so far (``cil``).
- ``imagenet-r``: 200 classes in 5/10/20 tasks, class order a seeded permutation, 80/20 split when the folder has none.

Data: ``--set scenario.root=DIR``. Each dataset is read from ``DIR/<name>/train`` and ``DIR/<name>/test`` as
ImageFolder trees (``<class name>/<image>``) when they exist, else with the torchvision dataset class (``download=False``)
rooted at ``DIR/<name>``. A missing dataset raises one error naming the folder to fill. Default backbone:
``open_clip:ViT-B-16@openai``. Class names come from the folders (underscores become spaces).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from torch.utils.data import Dataset, Subset

from cl_suite.api import Task
from scenarios.clip_tasks import TINY_EXAMPLES, TINY_TASKS, ClipScenario, Domain

MTIL_ORDER_I = ("aircraft", "caltech101", "cifar100", "dtd", "eurosat", "flowers", "food", "mnist", "oxford_pet",
                "stanford_cars", "sun397")  # fmt: skip
MTIL_ORDER_II = tuple(MTIL_ORDER_I[i] for i in (9, 6, 7, 8, 5, 10, 0, 1, 3, 4, 2))  # ZSCL results.ipynb
XTAIL_ORDER = ("aircraft", "caltech101", "dtd", "eurosat", "flowers", "food", "mnist", "oxford_pet", "stanford_cars",
               "sun397")  # fmt: skip
CIFAR100_ORDER = (
    87, 0, 52, 58, 44, 91, 68, 97, 51, 15, 94, 92, 10, 72, 49, 78, 61, 14, 8, 86, 84, 96, 18, 24, 32, 45, 88, 11, 4, 67,
    69, 66, 77, 47, 79, 93, 29, 50, 57, 83, 17, 81, 41, 12, 37, 59, 25, 20, 80, 73, 1, 28, 6, 46, 62, 82, 53, 9, 31, 75,
    38, 63, 33, 74, 27, 22, 36, 3, 16, 21, 60, 19, 70, 90, 89, 43, 5, 42, 65, 76, 40, 30, 23, 85, 2, 95, 56, 48, 71, 64,
    98, 13, 99, 7, 34, 55, 54, 26, 35, 39,
)  # fmt: skip  # DER/PODNet order, as in ZSCL cil/class_orders
TEMPLATES = {
    "aircraft": ("a photo of a {}, a type of aircraft.", "a photo of the {}, a type of aircraft."),
    "caltech101": ("a photo of a {}.", "a painting of a {}.", "a plastic {}.", "a sculpture of a {}."),
    "cifar100": ("a photo of a {}.", "a blurry photo of a {}.", "a low resolution photo of a {}."),
    "dtd": ("a photo of a {} texture.", "a photo of a {} pattern.", "a photo of a {} object."),
    "eurosat": ("a centered satellite photo of {}.", "a centered satellite photo of a {}."),
    "flowers": ("a photo of a {}, a type of flower.",),
    "food": ("a photo of {}, a type of food.",),
    "mnist": ('a photo of the number: "{}".',),
    "oxford_pet": ("a photo of a {}, a type of pet.",),
    "stanford_cars": ("a photo of a {}.", "a photo of the {}.", "a photo of my {}."),
    "sun397": ("a photo of a {}.", "a photo of the {}."),
    "imagenet-r": ("a photo of a {}.", "a rendering of a {}.", "a drawing of a {}.", "a cartoon {}."),
}  # fmt: skip
# torchvision fallback: class name and the (train, test) constructor arguments.
TORCHVISION = {
    "aircraft": ("FGVCAircraft", {"split": "trainval"}, {"split": "test"}),
    "caltech101": ("Caltech101", None, None),
    "cifar100": ("CIFAR100", {"train": True}, {"train": False}),
    "dtd": ("DTD", {"split": "train"}, {"split": "test"}),
    "eurosat": ("EuroSAT", None, None),
    "flowers": ("Flowers102", {"split": "train"}, {"split": "test"}),
    "food": ("Food101", {"split": "train"}, {"split": "test"}),
    "mnist": ("MNIST", {"train": True}, {"train": False}),
    "oxford_pet": ("OxfordIIITPet", {"split": "trainval"}, {"split": "test"}),
    "stanford_cars": ("StanfordCars", {"split": "train"}, {"split": "test"}),
    "sun397": ("SUN397", None, None),
}  # fmt: skip


class DictItems(Dataset):
    """(image, label) datasets as ``{"x", "y"}`` items."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> dict:
        x, y = self.dataset[i]
        return {"x": x, "y": int(y)}


def _clean(name: str) -> str:
    return name.replace("_", " ").strip()


def _labels(dataset: Dataset) -> np.ndarray:
    for attr in ("targets", "_labels", "labels", "y"):
        if hasattr(dataset, attr):
            return np.asarray(getattr(dataset, attr))
    return np.array([int(dataset[i][1]) for i in range(len(dataset))])


def load_split(name: str, root: str, transform) -> tuple[Dataset, Dataset, list[str]]:
    """(train, test, class names) of dataset ``name`` under ``root``; a clear FileNotFoundError when absent."""
    from torchvision import datasets

    folder = Path(root) / name
    if (folder / "train").is_dir() and (folder / "test").is_dir():
        train, test = (datasets.ImageFolder(str(folder / s), transform=transform) for s in ("train", "test"))
        if train.classes != test.classes:
            raise ValueError(f"{folder}/train and {folder}/test have different class folders")
        return train, test, [_clean(c) for c in train.classes]
    spec = TORCHVISION.get(name)
    hint = (f"dataset {name!r} not found: put ImageFolder trees at {folder}/train/<class>/* and {folder}/test/<class>/*"
            + (f", or torchvision's {spec[0]} files under {folder} (torchvision.datasets.{spec[0]}(root={str(folder)!r}, "
               "download=True) once online)" if spec else ""))  # fmt: skip
    if spec is None or spec[1] is None or not folder.exists():
        raise FileNotFoundError(hint)
    cls = getattr(datasets, spec[0])
    try:
        train, test = cls(str(folder), transform=transform, **spec[1]), cls(str(folder), transform=transform, **spec[2])
    except (RuntimeError, FileNotFoundError, OSError) as e:
        raise FileNotFoundError(f"{hint} ({e})") from e
    names = getattr(train, "classes", None) or getattr(train, "categories", None)
    if not names:
        raise FileNotFoundError(f"torchvision's {spec[0]} gives no class names; {hint}")
    return train, test, [_clean(c) for c in names]


def few_shot(labels: np.ndarray, shots: int, seed: int) -> np.ndarray:
    """``shots`` indices per class, drawn with ``seed`` (all of a class when it has fewer)."""
    rng = np.random.default_rng(seed)
    picks = [rng.permutation(np.flatnonzero(labels == c))[:shots] for c in np.unique(labels)]
    return np.sort(np.concatenate(picks))


def _limit(dataset: Dataset, labels: np.ndarray, tiny: bool, seed: int) -> Dataset:
    if not tiny or len(dataset) <= TINY_EXAMPLES:
        return dataset
    idx = few_shot(labels, max(1, TINY_EXAMPLES // len(np.unique(labels))), seed)[:TINY_EXAMPLES]
    return Subset(dataset, idx.tolist())


def _transform(image_size: int):
    import open_clip

    return open_clip.image_transform(image_size, is_train=False, mean=open_clip.OPENAI_DATASET_MEAN,
                                     std=open_clip.OPENAI_DATASET_STD)  # fmt: skip


@dataclass
class MtilConfig:
    root: str = "data"
    order: Literal["I", "II"] = "I"
    domains: tuple[str, ...] = ()  # an explicit task order; overrides ``order`` when set
    backbone: str = "open_clip:ViT-B-16@openai"
    image_size: int = 224
    shots: int = 0  # training shots per class; 0 = the full training set
    shot_seed: int = 42
    text_loss: float = 0.0
    label_smoothing: float = 0.2  # ZSCL's


class Mtil(ClipScenario):
    """MTIL (ZSCL): 11 domains in order I or II, task-incremental, CLIP ViT-B/16; Transfer / Avg. / Last."""

    setting = "til"
    Config = MtilConfig
    train_defaults = {"max_steps": 1000, "batch_size": 64, "lr": 1e-5, "weight_decay": 0.0}
    default_domains = MTIL_ORDER_I

    def order(self) -> tuple[str, ...]:
        if self.config.domains:
            return tuple(self.config.domains)
        return MTIL_ORDER_II if self.config.order == "II" else self.default_domains

    def domains(self) -> list[Domain]:
        names = self.order()[:TINY_TASKS] if self.tiny else self.order()
        transform, out = _transform(self.config.image_size), []
        for name in names:
            train, test, classes = load_split(name, self.config.root, transform)
            labels = _labels(train)
            if self.config.shots:
                train = Subset(train, few_shot(labels, self.config.shots, self.config.shot_seed).tolist())
                labels = labels[train.indices]
            train = _limit(train, labels, self.tiny, self.config.shot_seed)
            test = _limit(test, _labels(test), self.tiny, self.config.shot_seed)
            templates = TEMPLATES.get(name, ("a photo of a {}.",))
            out.append(Domain(name, tuple(classes), templates, DictItems(train), DictItems(test)))
        return out


@dataclass
class XtailConfig(MtilConfig):
    shots: int = 16
    label_smoothing: float = 0.0


class Xtail(Mtil):
    """X-TAIL (RAIL): 10 domains, 16-shot, predicted over the union of all class names without a domain id; dil."""

    setting = "dil"
    Config = XtailConfig
    default_domains = XTAIL_ORDER

    def order(self) -> tuple[str, ...]:
        return tuple(self.config.domains) or XTAIL_ORDER


class _ClassIncremental(ClipScenario):
    """One dataset split into tasks by an explicit class order; predicts over the classes seen so far."""

    setting = "cil"
    eval_classes = "seen"
    loss_classes = "seen"
    summary = ("last_weighted", "avg_inc_weighted", "last", "forgetting", "bwt")
    dataset_name = ""

    def class_order(self, n_classes: int) -> list[int]:
        raise NotImplementedError

    def tasks(self) -> list[Task]:
        if self._tasks is not None:
            return self._tasks
        c = self.config
        train, test, names = self.load()
        ytr, yte = _labels(train), _labels(test)
        order = self.class_order(len(names))
        if sorted(order) != list(range(len(names))):
            raise ValueError(f"class order must be a permutation of 0..{len(names) - 1}")
        if len(names) % c.n_tasks:
            raise ValueError(f"n_tasks must divide the {len(names)} classes, got {c.n_tasks}")
        per = len(names) // c.n_tasks
        templates = TEMPLATES.get(self.dataset_name, ("a photo of a {}.",))
        self._tasks = []
        for t in range(TINY_TASKS if self.tiny else c.n_tasks):
            classes = tuple(order[t * per : (t + 1) * per])
            splits = []
            for ds, y in ((train, ytr), (test, yte)):
                idx = np.flatnonzero(np.isin(y, classes))
                if self.tiny:
                    idx = idx[few_shot(y[idx], max(1, TINY_EXAMPLES // per), c.seed)][:TINY_EXAMPLES]
                splits.append(DictItems(Subset(ds, idx.tolist())))
            self._tasks.append(Task(t, f"{self.dataset_name}-{t}", splits[0], splits[1], classes,
                                    {"class_names": list(names), "templates": list(templates)}))  # fmt: skip
        return self._tasks

    def build_model(self, ctx):
        from cl_suite.models.clip import CLIPTaskModel, load_clip

        tasks = self.tasks()
        names = tasks[0].meta["class_names"]
        clip, tokenizer, _ = load_clip(self.config.backbone)
        return CLIPTaskModel(clip, tokenizer, names, [tuple(tasks[0].meta["templates"])] * len(names),
                             [t.classes for t in tasks], self.backbone, eval_classes=self.eval_classes,
                             loss_classes=self.loss_classes, text_loss=self.config.text_loss,
                             label_smoothing=self.config.label_smoothing)  # fmt: skip


@dataclass
class ClipCifar100Config:
    root: str = "data"
    n_tasks: int = 10
    class_order: tuple[int, ...] = CIFAR100_ORDER
    backbone: str = "open_clip:ViT-B-16@openai"
    image_size: int = 224
    seed: int = 0
    text_loss: float = 0.0
    label_smoothing: float = 0.0


class ClipCifar100(_ClassIncremental):
    """CLIP class-incremental CIFAR-100, B0 Inc10 in the DER/PODNet class order (ZSCL cil); cil."""

    Config = ClipCifar100Config
    dataset_name = "cifar100"
    train_defaults = {"epochs": 1, "batch_size": 64, "lr": 1e-5}

    def load(self):
        train, test, names = load_split("cifar100", self.config.root, _transform(self.config.image_size))
        if len(names) != 100:
            raise ValueError(f"cifar100 under {self.config.root} has {len(names)} classes, expected 100")
        return train, test, names

    def class_order(self, n_classes: int) -> list[int]:
        return list(self.config.class_order)


@dataclass
class ImagenetRConfig:
    root: str = "data"
    n_tasks: Literal[5, 10, 20] = 10
    order_seed: int = 1993  # the class order is this seed's permutation (PILOT's convention), listed in the record
    split_seed: int = 0
    backbone: str = "open_clip:ViT-B-16@openai"
    image_size: int = 224
    seed: int = 0
    text_loss: float = 0.0
    label_smoothing: float = 0.0


class ImagenetR(_ClassIncremental):
    """CLIP class-incremental ImageNet-R: 200 classes in 5/10/20 tasks, from an ImageFolder root; cil."""

    Config = ImagenetRConfig
    dataset_name = "imagenet-r"
    train_defaults = {"epochs": 1, "batch_size": 64, "lr": 1e-5}

    def load(self):
        from torchvision import datasets

        folder = Path(self.config.root) / "imagenet-r"
        transform = _transform(self.config.image_size)
        if (folder / "train").is_dir():
            return load_split("imagenet-r", self.config.root, transform)
        if not folder.is_dir():
            raise FileNotFoundError(f"dataset 'imagenet-r' not found: extract imagenet-r.tar to {folder} "
                                    "(<class folder>/<image>) or give train/ and test/ folders there")  # fmt: skip
        full = datasets.ImageFolder(str(folder), transform=transform)
        labels = np.asarray(full.targets)
        rng, test = np.random.default_rng(self.config.split_seed), []
        for c in np.unique(labels):  # 80/20 per class, as PILOT's split
            idx = rng.permutation(np.flatnonzero(labels == c))
            test.extend(idx[: max(1, round(0.2 * len(idx)))])
        is_test = np.isin(np.arange(len(labels)), test)
        train_set, test_set = Subset(full, np.flatnonzero(~is_test).tolist()), Subset(full, sorted(test))
        train_set.targets, test_set.targets = labels[~is_test], labels[sorted(test)]
        return train_set, test_set, [_clean(c) for c in full.classes]

    def class_order(self, n_classes: int) -> list[int]:
        return np.random.default_rng(self.config.order_seed).permutation(n_classes).tolist()
