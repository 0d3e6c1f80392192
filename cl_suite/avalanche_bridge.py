"""Bridge between cl-suite tasks and Avalanche (0.6) datasets and benchmarks, in both directions.

Our items are dicts ``{"x": tensor, "y": label}``; Avalanche's classification items are tuples ``(x, y, t)``
with ``targets`` / ``targets_task_labels`` data attributes. The two wrappers below convert lazily (no copy of
the data). Avalanche is imported only inside the functions that need it: ``import cl_suite`` stays light and
installs the torchvision fix that Avalanche's import needs (see ``reference/environment.md`` §4).
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from cl_suite.api import Task
from cl_suite.data import class_subset

INSTALL_HINT = "pip install -c constraints.txt 'cl-suite[avalanche]'"


def require_avalanche(module: str = "avalanche") -> Any:
    """Import an Avalanche module, or fail with one line saying how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ImportError(f"this needs Avalanche (avalanche-lib 0.6): {INSTALL_HINT} ({e})") from e


class ItemsAsTuples(Dataset):
    """Our dict items -> ``(x, y)`` tuples, the shape Avalanche's classification datasets wrap."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> tuple[Any, int]:
        item = self.dataset[i]
        if not isinstance(item, dict) or "x" not in item or "y" not in item:
            raise TypeError("Avalanche interop needs dataset items {'x': tensor, 'y': label}; "
                            f"got {type(item).__name__} with keys {sorted(item) if isinstance(item, dict) else '-'}")  # fmt: skip
        return item["x"], int(item["y"])


class TuplesAsItems(Dataset):
    """Avalanche items ``(x, y, t...)`` -> our dicts ``{"x": x, "y": y}`` (the task label is dropped)."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        item = self.dataset[i]
        return {"x": item[0], "y": torch.as_tensor(item[1], dtype=torch.long)}


def targets_of(dataset: Dataset) -> list[int]:
    """The label of every item: read from ``.y`` / ``.targets`` when the dataset has them, else item by item."""
    for name in ("y", "targets"):
        values = getattr(dataset, name, None)
        if values is not None and not callable(values) and len(values) == len(dataset):
            return [int(v) for v in values]
    return [int(dataset[i]["y"]) for i in range(len(dataset))]


def to_avalanche_dataset(dataset: Dataset, task_label: int = 0) -> Any:
    """One of our datasets as an Avalanche task-aware classification dataset (items ``(x, y, t)``)."""
    utils = require_avalanche("avalanche.benchmarks.utils")
    return utils._make_taskaware_classification_dataset(  # the maker Avalanche's own plugins use (e.g. AGEM)
        ItemsAsTuples(dataset), task_labels=task_label, targets=targets_of(dataset)
    )


def to_avalanche(tasks: Sequence[Task]) -> Any:
    """Our tasks as an Avalanche benchmark (``train_stream`` / ``test_stream``, one experience per task)."""
    scenarios = require_avalanche("avalanche.benchmarks.scenarios")
    return scenarios.benchmark_from_datasets(
        train=[to_avalanche_dataset(t.train) for t in tasks], test=[to_avalanche_dataset(t.test) for t in tasks]
    )


def from_avalanche(benchmark: Any, *, max_tasks: int | None = None, limit: int | None = None,
                   prefix: str = "exp") -> list[Task]:  # fmt: skip
    """Any Avalanche classification benchmark (``train_stream`` and ``test_stream`` of equal length) as Tasks.

    ``max_tasks`` keeps the first experiences; ``limit`` keeps at most that many examples per split, class
    balanced (what ``--tiny`` needs). Task ``classes`` are the labels of the experience's training data.
    """
    train_stream, test_stream = list(benchmark.train_stream), list(benchmark.test_stream)
    if len(train_stream) != len(test_stream):
        raise ValueError(f"benchmark has {len(train_stream)} train and {len(test_stream)} test experiences; "
                         "from_avalanche needs one test experience per train experience")  # fmt: skip
    if max_tasks is not None:
        train_stream, test_stream = train_stream[:max_tasks], test_stream[:max_tasks]
    tasks = []
    for i, (train_exp, test_exp) in enumerate(zip(train_stream, test_stream)):
        train_labels = np.asarray([int(v) for v in train_exp.dataset.targets])
        classes = tuple(sorted(set(train_labels.tolist())))
        splits = []
        for exp, labels in ((train_exp, train_labels), (test_exp, None)):
            labels = labels if labels is not None else np.asarray([int(v) for v in exp.dataset.targets])
            dataset = TuplesAsItems(exp.dataset)
            if limit is not None and len(labels) > limit:
                keep = class_subset(labels, np.arange(len(labels)), sorted(set(labels.tolist())), limit, seed=i)
                dataset = torch.utils.data.Subset(dataset, keep.tolist())
            splits.append(dataset)
        tasks.append(Task(index=i, name=f"{prefix}{i}-{'-'.join(map(str, classes))}", train=splits[0],
                          test=splits[1], classes=classes, meta={"class_names": [str(c) for c in classes]}))  # fmt: skip
    return tasks
