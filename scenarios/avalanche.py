"""Avalanche benchmarks as cl-suite scenarios.

``from_avalanche(benchmark)`` turns any Avalanche classification benchmark (built with ``nc_benchmark``,
``benchmark_from_datasets``, ``class_incremental_benchmark`` or by hand) into our Tasks. To run your own,
subclass :class:`AvalancheScenario`, return the benchmark from ``benchmark()`` and the model from
``build_model``, and register the class under ``cl_suite.scenarios`` (or pass ``--scenario module:Class``).

``avalanche-digits`` is the small example: scikit-learn's bundled digits built into an Avalanche
``nc_benchmark`` from tensors (Avalanche's own loaders download at run time; see environment.md §4), with the
same split, class order and backbones as ``digits-tiny``, so the two scenarios give comparable numbers under the same
``backbone=``. Its default is ``scratch`` (the tiny ViT from scratch), ``digits-tiny``'s is ``tiny-clip``: the
published tier then has one board per regime on the same data, and this one is the regime the Avalanche baselines
(EWC, SI, LwF, replay, GEM, ...) were designed for.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from cl_suite.api import Context, Scenario, Task, TaskModel
from cl_suite.avalanche_bridge import from_avalanche, require_avalanche
from cl_suite.data import stratified_split
from cl_suite.models.classifier import evaluate_accuracy
from cl_suite.models.tiny_clip_vision import is_tiny_clip, to_clip_input
from scenarios.digits import TinyTowerRecipe, check_backbone, digit_tensors, digits_backbone_name, digits_classifier

__all__ = ["AvalancheDigits", "AvalancheScenario", "from_avalanche"]

TINY_TASKS, TINY_EXAMPLES = 2, 64  # --tiny: at most 2 tasks and 64 examples per split


class AvalancheScenario(Scenario):
    """Base class: a scenario whose tasks come from an Avalanche benchmark. Subclasses give ``benchmark()``."""

    setting = "cil"
    metrics = {"acc": "max"}
    summary = ("last", "avg_inc", "forgetting", "bwt", "fwt", "forgetting_first_last")

    def __init__(self, config: Any = None, *, tiny: bool = False) -> None:
        super().__init__(config, tiny=tiny)
        self._tasks: list[Task] | None = None

    def benchmark(self) -> Any:
        """The Avalanche benchmark (an object with ``train_stream`` and ``test_stream``)."""
        raise NotImplementedError

    def tasks(self) -> list[Task]:
        if self._tasks is None:
            limit = TINY_EXAMPLES if self.tiny else None
            self._tasks = from_avalanche(self.benchmark(), max_tasks=TINY_TASKS if self.tiny else None, limit=limit)
        return self._tasks

    def evaluate(self, predict, task: Task, ctx: Context) -> dict[str, float]:
        return evaluate_accuracy(predict, task, ctx)


class _LabelledTensors(torch.utils.data.TensorDataset):
    """A TensorDataset with the ``targets`` list Avalanche's generators read."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        super().__init__(x, y)
        self.targets = y.tolist()


@dataclass
class AvalancheDigitsConfig:
    class_order: tuple[int, ...] = (0, 1, 2, 3, 4, 5, 6, 7, 8, 9)
    n_experiences: int = 5
    test_fraction: float = 0.25
    split_seed: int = 0
    backbone: str = "scratch"  # scratch (tiny ViT from scratch) | tiny-clip[@weights.pt] (pretrained tiny CLIP tower)
    dim: int = 32  # dim, depth, heads, patch: the scratch ViT only
    depth: int = 2
    heads: int = 2
    patch: int = 2


class AvalancheDigits(TinyTowerRecipe, AvalancheScenario):
    """sklearn digits as an Avalanche nc_benchmark (5 experiences x 2 classes); backbones as digits-tiny."""

    setting = "cil"
    provides = frozenset({"features", "logits", "linear_targets", "blocks"})
    Config = AvalancheDigitsConfig
    train_defaults = {"epochs": 5, "batch_size": 32, "lr": 3e-3}

    def __init__(self, config: AvalancheDigitsConfig | None = None, *, tiny: bool = False) -> None:
        super().__init__(config, tiny=tiny)
        check_backbone(self.config.backbone)
        order, n = self.config.class_order, self.config.n_experiences
        if sorted(order) != list(range(10)):
            raise ValueError(f"class_order must be a permutation of 0..9, got {list(order)}")
        if n < 1 or 10 % n:
            raise ValueError(f"n_experiences must divide 10 (1, 2, 5 or 10), got {n}")

    @property
    def backbone(self) -> str:
        return digits_backbone_name(self.config)

    def benchmark(self) -> Any:
        benchmarks = require_avalanche("avalanche.benchmarks")
        x, y, labels = digit_tensors()
        if is_tiny_clip(self.config.backbone):
            x = to_clip_input(x)
        train_idx, test_idx = stratified_split(labels, self.config.test_fraction, self.config.split_seed)
        train_idx, test_idx = torch.as_tensor(train_idx), torch.as_tensor(test_idx)
        return benchmarks.nc_benchmark(
            _LabelledTensors(x[train_idx], y[train_idx]), _LabelledTensors(x[test_idx], y[test_idx]),
            n_experiences=self.config.n_experiences, task_labels=False,
            fixed_class_order=list(self.config.class_order), seed=self.config.split_seed,
        )  # fmt: skip

    def build_model(self, ctx: Context) -> TaskModel:
        return digits_classifier(self.config, [t.classes for t in self.tasks()])
