"""Few-shot class-incremental learning (FSCIL): a base session of many classes with full data, then N-way K-shot
sessions whose images are fixed by index files (TOPIC/CEC protocol, ../shared/reference/benchmarks.md §5).

Tasks are sessions; task 0 is the base session. Each task's test set holds the classes that session introduces,
and predictions are always over every class seen so far, so the accuracy on "all classes seen up to session s"
is the sample-weighted mean of the seen columns (cl_suite.metrics.fscil_sessions); base-class and novel-class
accuracy and their harmonic mean come from the same matrix.

Scenarios: ``fscil-tiny`` (generated shape/colour images, seconds on a CPU), ``fscil-cifar100`` (60 + 8 x 5-way
5-shot), ``fscil-mini-imagenet`` (60 + 8 x 5w5s), ``fscil-cub200`` (100 + 10 x 10w5s). The model is a small ViT
trained from scratch on the base session (the "from-scratch" regime; the leaderboard keeps backbones apart).
Published numbers mostly use ResNet-12/18/20, which this suite does not ship yet. ``fscil-tiny`` also takes the
pretrained tiny CLIP image tower (``backbone=tiny-clip``, its default; ``backbone=scratch`` for the small ViT), the
regime of pretrained-ViT FSCIL methods and of the adapter strategies.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
from torch.utils.data import Dataset

from cl_suite.api import Context, MissingData, Scenario, Task, TaskModel
from cl_suite.config import ConfigError
from cl_suite.data import class_subset
from cl_suite.models.classifier import ClassifierModel, evaluate_accuracy
from cl_suite.models.tiny_clip_vision import is_tiny_clip, to_clip_input
from cl_suite.models.tiny_vit import TinyViT
from scenarios import fscil_data
from scenarios.digits import TinyTowerRecipe, check_backbone, digits_backbone_name, digits_classifier
from scenarios.fscil_index import PROTOCOLS, Protocol, check_session, index_dir, read_session, session_file

TINY_TASKS, TINY_EXAMPLES = 2, 64  # --tiny: the base session and one few-shot session, 64 examples per split


@dataclass
class FSCILConfig:
    """Knobs shared by the FSCIL scenarios. ``index_dir`` replaces the bundled session lists."""

    root: str = ""
    index_dir: str = ""
    augment: bool = True  # random crop + flip on the base session only; few-shot sets are used as listed
    image_size: int = 32
    patch: int = 4
    dim: int = 64
    depth: int = 4
    heads: int = 4


@dataclass
class CifarConfig(FSCILConfig):
    download: bool = False


@dataclass
class MiniImageNetConfig(FSCILConfig):
    image_size: int = 84
    patch: int = 12


@dataclass
class CubConfig(FSCILConfig):
    image_size: int = 224
    patch: int = 16
    dim: int = 192


@dataclass
class TinyConfig(FSCILConfig):
    per_class_train: int = 60
    per_class_test: int = 20
    data_seed: int = 0
    augment: bool = False
    backbone: str = "tiny-clip"  # tiny-clip[@weights.pt] (pretrained tiny CLIP image tower) | scratch (small ViT)
    image_size: int = 16
    dim: int = 32
    depth: int = 2
    heads: int = 2


class FSCILScenario(Scenario):
    """Base of the FSCIL scenarios: subclasses name a protocol and load an image source."""

    setting = "fscil"
    provides = frozenset({"features", "logits", "linear_targets", "blocks"})
    metrics = {"acc": "max"}
    summary = ("fscil_avg", "fscil_pd", "fscil_hm", "fscil_base", "fscil_novel", "last_weighted")
    Config = FSCILConfig
    train_defaults = {"epochs": 100, "batch_size": 128, "lr": 1e-3}
    protocol: ClassVar[Protocol]

    def __init__(self, config: FSCILConfig | None = None, *, tiny: bool = False) -> None:
        super().__init__(config, tiny=tiny)
        c = self.config
        if c.image_size % c.patch:
            raise ConfigError(f"scenario.image_size {c.image_size} must be divisible by scenario.patch {c.patch}")
        if hasattr(c, "backbone"):
            check_backbone(c.backbone)
        self.session_classes = self.protocol.session_classes()
        if tiny:
            self.session_classes = self.session_classes[:TINY_TASKS]

    def _pretrained(self) -> bool:
        return is_tiny_clip(getattr(self.config, "backbone", "scratch"))

    @property
    def backbone(self) -> str:
        c = self.config
        if self._pretrained():
            return digits_backbone_name(c)
        return f"vit-scratch(d={c.dim},depth={c.depth},patch={c.patch},img={c.image_size})"

    def source(self) -> fscil_data.ImageSource:
        raise NotImplementedError

    layout: ClassVar[str] = ""  # the data folder's expected layout under scenario.root; "" for generated data
    required: ClassVar[tuple[str, ...]] = ()  # paths under scenario.root that must exist

    def check_data(self) -> None:
        """Missing data is bad input before a run folder exists: the root, each required path, the index folder."""
        if self.config.index_dir and not Path(self.config.index_dir).expanduser().is_dir():
            raise MissingData(f"{type(self).__name__}: scenario.index_dir {self.config.index_dir} is not a folder "
                              "(it holds session_<n>.txt lists)")  # fmt: skip
        if not self.layout:
            return
        if not self.config.root:
            raise MissingData(f"{type(self).__name__} needs its data: set scenario.root=<folder holding {self.layout}>")
        for rel in self.required:
            if not (Path(self.config.root).expanduser() / rel).exists():
                raise MissingData(f"{type(self).__name__}: missing {Path(self.config.root) / rel}; expected "
                                  f"{self.layout} under scenario.root")  # fmt: skip

    def _root(self, what: str) -> str:
        if not self.config.root:
            raise ConfigError(f"{type(self).__name__} needs its data: set scenario.root=<folder holding {what}>")
        return self.config.root

    def tasks(self) -> list[Task]:
        src = self.source()
        folder = index_dir(self.protocol.name, self.config.index_dir)
        limit = TINY_EXAMPLES if self.tiny else None
        pool_train, pool_test = np.arange(len(src.train_labels)), np.arange(len(src.test_labels))
        tasks = []
        for s, classes in enumerate(self.session_classes):
            lines = read_session(folder, s)
            if lines is None:  # no base list: every training image of the base classes, as CEC trains
                train = class_subset(src.train_labels, pool_train, classes)
            else:
                train = src.resolve(lines)
                if s > 0:
                    check_session(src.train_labels[train], classes, self.protocol.shots, session_file(folder, s))
                elif not np.isin(src.train_labels[train], classes).all():
                    raise ValueError(f"{session_file(folder, 0)} lists images outside the base classes")
            test = class_subset(src.test_labels, pool_test, classes)
            if limit is not None:
                train = class_subset(src.train_labels, train, classes, limit, seed=s)
                test = class_subset(src.test_labels, test, classes, limit, seed=s)
            train_set, test_set = src.subset("train", train, self.config.augment and s == 0), src.subset("test", test, False)
            if self._pretrained():
                train_set, test_set = ClipInput(train_set), ClipInput(test_set)
            names = [src.class_names[c] if c < len(src.class_names) else str(c) for c in classes]
            tasks.append(Task(
                index=s, name="base" if s == 0 else f"session{s}",
                train=train_set, test=test_set,
                classes=tuple(classes), meta={"session": s, "ways": len(classes), "class_names": names,
                                              "shots": None if s == 0 else self.protocol.shots},
            ))  # fmt: skip
        return tasks

    def build_model(self, ctx: Context) -> TaskModel:
        c = self.config
        if self._pretrained():
            return digits_classifier(c, self.session_classes, num_classes=self.protocol.num_classes)
        backbone = TinyViT(image_size=c.image_size, patch=c.patch, channels=3, dim=c.dim, depth=c.depth, heads=c.heads)
        return ClassifierModel(backbone, c.dim, self.session_classes, num_classes=self.protocol.num_classes,
                               backbone_name=self.backbone)  # fmt: skip

    def evaluate(self, predict, task: Task, ctx: Context) -> dict[str, float]:
        return evaluate_accuracy(predict, task, ctx)


class ClipInput(Dataset):
    """Items of an image dataset (``x`` in [0, 1], (3, H, W)) resized and normalised for the tiny CLIP tower."""

    def __init__(self, base: Dataset) -> None:
        self.base = base

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> dict:
        item = dict(self.base[i])
        item["x"] = to_clip_input(item["x"][None])[0]
        return item


class FSCILTiny(TinyTowerRecipe, FSCILScenario):
    """FSCIL on generated shape/colour images: 10 base + 5 x 2-way 5-shot; pretrained tiny CLIP tower or scratch ViT."""

    protocol = PROTOCOLS["fscil_tiny"]
    Config = TinyConfig
    train_defaults = {"epochs": 10, "batch_size": 32, "lr": 3e-3}

    def source(self) -> fscil_data.ImageSource:
        c = self.config
        return fscil_data.synthetic_source(c.per_class_train, c.per_class_test, c.image_size, c.data_seed)


class FSCILCifar100(FSCILScenario):
    """FSCIL CIFAR-100: 60 base classes + 8 x 5-way 5-shot (TOPIC/CEC lists), via torchvision."""

    protocol = PROTOCOLS["cifar100"]
    Config = CifarConfig
    layout = "cifar-100-python/{train,test,meta} (torchvision's CIFAR-100 python version)"
    required = ("cifar-100-python/train", "cifar-100-python/test", "cifar-100-python/meta")

    def check_data(self) -> None:
        if self.config.download and self.config.root:  # torchvision fetches what is missing
            return
        super().check_data()

    def source(self) -> fscil_data.ImageSource:
        root = self._root("cifar-100-python (torchvision's CIFAR-100)")
        return fscil_data.cifar100_source(root, self.config.image_size, self.config.download)


class FSCILMiniImageNet(FSCILScenario):
    """FSCIL miniImageNet: 60 base classes + 8 x 5-way 5-shot (CEC's version and lists), from a local folder."""

    protocol = PROTOCOLS["mini_imagenet"]
    Config = MiniImageNetConfig
    layout = "miniimagenet/images/*.jpg and miniimagenet/split/{train,test}.csv (CEC's layout)"
    required = ("miniimagenet/images", "miniimagenet/split/train.csv", "miniimagenet/split/test.csv")

    def source(self) -> fscil_data.ImageSource:
        return fscil_data.mini_imagenet_source(self._root("miniimagenet/"), self.config.image_size)


class FSCILCub200(FSCILScenario):
    """FSCIL CUB-200-2011: 100 base classes + 10 x 10-way 5-shot (TOPIC/CEC lists), from a local folder."""

    protocol = PROTOCOLS["cub200"]
    Config = CubConfig
    layout = "CUB_200_2011/ with images.txt, train_test_split.txt, image_class_labels.txt and images/"
    required = ("CUB_200_2011/images.txt", "CUB_200_2011/train_test_split.txt", "CUB_200_2011/image_class_labels.txt",
                "CUB_200_2011/images")  # fmt: skip

    def source(self) -> fscil_data.ImageSource:
        return fscil_data.cub200_source(self._root("CUB_200_2011/"), self.config.image_size)
