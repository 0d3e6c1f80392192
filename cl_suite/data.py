"""Small dataset helpers shared by scenarios: plain torch Datasets of dict items, deterministic splits."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset


class TensorDictDataset(Dataset):
    """Items ``{"x": x[i], "y": y[i]}`` from two aligned tensors (the default collate stacks them)."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        if len(x) != len(y):
            raise ValueError(f"x has {len(x)} rows but y has {len(y)}")
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"x": self.x[i], "y": self.y[i]}


def stratified_split(labels: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Train/test indices with the same class proportions; depends only on ``seed`` (the protocol's split)."""
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        k = max(1, round(len(idx) * test_fraction))
        test.extend(idx[:k])
        train.extend(idx[k:])
    return np.sort(np.array(train)), np.sort(np.array(test))


def class_subset(labels: np.ndarray, indices: np.ndarray, classes: Sequence[int], limit: int | None = None,
                 seed: int = 0) -> np.ndarray:  # fmt: skip
    """The members of ``indices`` whose label is in ``classes``; at most ``limit`` of them, class-balanced."""
    chosen = indices[np.isin(labels[indices], list(classes))]
    if limit is None or len(chosen) <= limit:
        return chosen
    rng = np.random.default_rng(seed)
    per_class = [rng.permutation(chosen[labels[chosen] == c]) for c in classes]
    interleaved = [i for group in zip(*per_class) for i in group]  # round-robin keeps classes balanced
    return np.sort(np.array(interleaved[:limit]))
