"""digits-tiny: class-incremental learning on scikit-learn's bundled handwritten digits.

1,797 8x8 images of 10 digits (the UCI optdigits test set that ships inside scikit-learn, so nothing is
downloaded). The protocol is explicit: the class order below, split into tasks of ``classes_per_task`` classes;
a stratified 75/25 train/test split fixed by ``split_seed`` (the run seed only changes the model's initialisation
and the data order).

Two backbones (``backbone=``), kept apart on the leaderboard by their backbone id:

* ``tiny-clip`` (default): the project's pretrained tiny CLIP image tower (cl_suite.models.tiny_clip_vision), the
  images upsampled to its 32x32 input. The regime SEMA, CoSO, MoRA, CoDyRA and OSFT are written for (a pretrained
  ViT adapted without forgetting); its frozen features alone give a linear probe 91.6 % on this split.
* ``scratch``: a tiny ViT trained from scratch (``dim``, ``depth``, ``heads``, ``patch``); the whole stream takes
  seconds on a CPU, but adapter methods have no pretrained representation to protect there.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from cl_suite.api import Context, Scenario, Task, TaskModel
from cl_suite.config import ConfigError
from cl_suite.data import TensorDictDataset, class_subset, stratified_split
from cl_suite.models.classifier import ClassifierModel, evaluate_accuracy
from cl_suite.models.tiny_clip_vision import TinyClipVision, backbone_id, is_tiny_clip, to_clip_input, weights_of
from cl_suite.models.tiny_vit import TinyViT

TINY_TASKS, TINY_EXAMPLES = 2, 64  # --tiny: at most 2 tasks and 64 examples per split
PRETRAINED_FULL_TUNE = {"lr": 3e-4}  # train.* of whole-model fine-tuning on the pretrained tower (README, measured)


class TinyTowerRecipe:
    """Mixin of the scenarios that take ``backbone=tiny-clip|scratch``. Their ``train_defaults`` (AdamW, lr 3e-3)
    were chosen for the from-scratch ViT; fine-tuning the whole pretrained tower at that lr wipes out what it learnt
    (joint on digits-tiny, seed 0: Last 66.3 at 3e-3, 95.8 at 3e-4), so on ``tiny-clip`` the strategies that tune
    the whole model (``Strategy.tunes_whole_model``) train at ``PRETRAINED_FULL_TUNE``; adapter methods keep their recipe."""

    @classmethod
    def full_tune_defaults(cls, config) -> dict:
        return dict(PRETRAINED_FULL_TUNE) if is_tiny_clip(config.backbone) else {}


@dataclass
class DigitsConfig:
    class_order: tuple[int, ...] = (0, 1, 2, 3, 4, 5, 6, 7, 8, 9)
    classes_per_task: int = 2
    test_fraction: float = 0.25
    split_seed: int = 0
    backbone: str = "tiny-clip"  # tiny-clip[@weights.pt] (pretrained tiny CLIP image tower) | scratch (tiny ViT)
    dim: int = 32  # dim, depth, heads, patch: the scratch ViT only
    depth: int = 2
    heads: int = 2
    patch: int = 2


class DigitsTiny(TinyTowerRecipe, Scenario):
    """Class-incremental sklearn digits, 5 tasks x 2 classes; pretrained tiny CLIP tower or a tiny ViT from scratch."""

    setting = "cil"
    provides = frozenset({"features", "logits", "linear_targets", "blocks"})
    metrics = {"acc": "max"}
    summary = ("last", "avg_inc", "forgetting", "bwt", "fwt", "forgetting_first_last")
    Config = DigitsConfig
    train_defaults = {"epochs": 5, "batch_size": 32, "lr": 3e-3}

    def __init__(self, config: DigitsConfig | None = None, *, tiny: bool = False) -> None:
        super().__init__(config, tiny=tiny)
        check_backbone(self.config.backbone)
        order, k = self.config.class_order, self.config.classes_per_task
        if sorted(order) != list(range(10)):
            raise ValueError(f"class_order must be a permutation of 0..9, got {list(order)}")
        if k < 1 or 10 % k:
            raise ValueError(f"classes_per_task must divide 10, got {k}")
        self.task_classes = [tuple(order[i : i + k]) for i in range(0, 10, k)]
        if tiny:
            self.task_classes = self.task_classes[:TINY_TASKS]

    @property
    def backbone(self) -> str:
        return digits_backbone_name(self.config)

    def tasks(self) -> list[Task]:
        x, y, labels = digit_tensors()
        if is_tiny_clip(self.config.backbone):
            x = to_clip_input(x)
        train_idx, test_idx = stratified_split(labels, self.config.test_fraction, self.config.split_seed)
        limit = TINY_EXAMPLES if self.tiny else None
        tasks = []
        for i, classes in enumerate(self.task_classes):
            splits = [class_subset(labels, idx, classes, limit, seed=i) for idx in (train_idx, test_idx)]
            tasks.append(Task(
                index=i, name=f"digits-{'-'.join(map(str, classes))}",
                train=TensorDictDataset(x[splits[0]], y[splits[0]]), test=TensorDictDataset(x[splits[1]], y[splits[1]]),
                classes=classes, meta={"class_names": [str(c) for c in classes]},
            ))  # fmt: skip
        return tasks

    def build_model(self, ctx: Context) -> TaskModel:
        return digits_classifier(self.config, self.task_classes)

    def evaluate(self, predict, task: Task, ctx: Context) -> dict[str, float]:
        return evaluate_accuracy(predict, task, ctx)


def digit_tensors() -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """scikit-learn's bundled digits: images (N, 1, 8, 8) scaled to [0, 1], labels as a tensor and as numpy."""
    from sklearn.datasets import load_digits

    images, labels = load_digits(return_X_y=True)
    x = torch.tensor(images, dtype=torch.float32).view(-1, 1, 8, 8) / 16.0
    return x, torch.tensor(labels, dtype=torch.long), labels


def tiny_vit_name(c) -> str:
    """The backbone id of a digits tiny ViT (a config with dim, depth, patch)."""
    return f"tiny-vit(d={c.dim},depth={c.depth},patch={c.patch})"


def tiny_vit_classifier(c, task_classes) -> ClassifierModel:
    """The digits model: a tiny ViT from scratch under a 10-class head (a config with dim, depth, heads, patch)."""
    backbone = TinyViT(image_size=8, patch=c.patch, channels=1, dim=c.dim, depth=c.depth, heads=c.heads)
    return ClassifierModel(backbone, c.dim, task_classes, num_classes=10, backbone_name=tiny_vit_name(c))


BACKBONES = "tiny-clip, tiny-clip@<weights.pt>, scratch"


def check_backbone(spec: str) -> None:
    if spec != "scratch" and not is_tiny_clip(spec):
        raise ConfigError(f"scenario.backbone: unknown backbone {spec!r}; accepted: {BACKBONES}")
    if weights_of(spec) and not Path(weights_of(spec)).is_file():
        raise ConfigError(f"scenario.backbone: no tiny CLIP weights at {weights_of(spec)!r}")


def digits_backbone_name(c) -> str:
    """The leaderboard's backbone id for a config with ``backbone`` (and the scratch ViT's dim, depth, patch)."""
    return tiny_vit_name(c) if c.backbone == "scratch" else backbone_id(c.backbone)


def digits_classifier(c, task_classes, num_classes: int = 10) -> ClassifierModel:
    """The model of a digits-style scenario: the pretrained tiny CLIP tower or the scratch tiny ViT, under one head."""
    if c.backbone == "scratch":
        return tiny_vit_classifier(c, task_classes)
    tower = TinyClipVision(weights_of(c.backbone))
    return ClassifierModel(tower, tower.dim, task_classes, num_classes=num_classes, backbone_name=backbone_id(c.backbone),
                           pretrained=True)  # fmt: skip
