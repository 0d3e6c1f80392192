"""digits-tiny: class-incremental learning on scikit-learn's bundled handwritten digits.

1,797 8x8 images of 10 digits (the UCI optdigits test set that ships inside scikit-learn, so nothing is
downloaded). The protocol is explicit: the class order below, split into tasks of ``classes_per_task`` classes;
a stratified 75/25 train/test split fixed by ``split_seed`` (the run seed only changes the model's initialisation
and the data order). The model is a tiny ViT trained from scratch: the whole 5-task stream takes seconds on a CPU.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from cl_suite.api import Context, Scenario, Task, TaskModel
from cl_suite.data import TensorDictDataset, class_subset, stratified_split
from cl_suite.models.classifier import ClassifierModel, evaluate_accuracy
from cl_suite.models.tiny_vit import TinyViT

TINY_TASKS, TINY_EXAMPLES = 2, 64  # --tiny: at most 2 tasks and 64 examples per split


@dataclass
class DigitsConfig:
    class_order: tuple[int, ...] = (0, 1, 2, 3, 4, 5, 6, 7, 8, 9)
    classes_per_task: int = 2
    test_fraction: float = 0.25
    split_seed: int = 0
    dim: int = 32
    depth: int = 2
    heads: int = 2
    patch: int = 2


class DigitsTiny(Scenario):
    """Class-incremental sklearn digits, 5 tasks x 2 classes, tiny ViT from scratch (seconds on a CPU)."""

    setting = "cil"
    provides = frozenset({"features", "logits", "linear_targets", "blocks"})
    metrics = {"acc": "max"}
    summary = ("last", "avg_inc", "forgetting", "bwt", "fwt", "forgetting_first_last")
    Config = DigitsConfig
    train_defaults = {"epochs": 5, "batch_size": 32, "lr": 3e-3}

    def __init__(self, config: DigitsConfig | None = None, *, tiny: bool = False) -> None:
        super().__init__(config, tiny=tiny)
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
        return tiny_vit_name(self.config)

    def tasks(self) -> list[Task]:
        x, y, labels = digit_tensors()
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
        return tiny_vit_classifier(self.config, self.task_classes)

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
