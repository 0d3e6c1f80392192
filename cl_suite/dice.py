"""Dice per organ for segmentation scenarios, accumulated per case (volume) over its slices.

``Dice_c = 2|P ∩ G| / (|P| + |G|)`` (../shared/reference/benchmarks.md §1, as in MrGiovanni/ContinualLearning's
``test.py`` and MONAI's ``DiceMetric``). A volume is scored as a whole: intersections and sizes are summed over its
slices before the ratio, so slice-by-slice prediction still gives 3D Dice. A case whose ground truth lacks an organ
is left out of that organ's mean (MONAI's ``ignore_empty=True``); an organ absent from every case has no Dice.
The scenario's score of a task is the mean over the task's organs, in percent, with ``n`` = number of organs so the
organ-weighted summaries (cl_suite.metrics ``seg_*``) weigh tasks correctly.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence

import numpy as np
import torch

from cl_suite.api import Batch, Context, Task, to_device


class DiceAccumulator:
    """Sums |P∩G|, |P| and |G| per (case, organ) over batches of label maps."""

    def __init__(self, organs: Sequence[int]) -> None:
        self.organs = [int(o) for o in organs]
        self.sums: dict[tuple[int, int], np.ndarray] = defaultdict(lambda: np.zeros(3))

    def update(self, pred: torch.Tensor, target: torch.Tensor, cases: torch.Tensor) -> None:
        """``pred`` and ``target``: (B, H, W) global organ ids; ``cases``: (B,) case ids."""
        for case in torch.unique(cases).tolist():
            rows = cases == case
            p, g = pred[rows], target[rows]
            for organ in self.organs:
                pm, gm = p == organ, g == organ
                self.sums[(case, organ)] += np.array([int((pm & gm).sum()), int(pm.sum()), int(gm.sum())])

    def per_organ(self) -> dict[int, float]:
        """Mean Dice (0–1) over the cases that contain each organ; organs in no case are left out."""
        scores: dict[int, list[float]] = defaultdict(list)
        for (_, organ), (inter, p, g) in self.sums.items():
            if g > 0:
                scores[organ].append(2 * inter / (p + g))
        return {o: float(np.mean(scores[o])) for o in self.organs if scores[o]}


@torch.no_grad()
def evaluate_dice(predict: Callable[[Batch], torch.Tensor], task: Task, ctx: Context) -> dict[str, float]:
    """``dice`` (percent, mean over the task's organs), ``dice/<organ>`` per organ, and ``n`` (organs scored).

    ``task.classes`` are the task's global organ ids and ``task.meta["organs"]`` their names; batches carry
    ``x``, ``y`` (global ids, 0 = background) and ``case``.
    """
    names = dict(zip(task.classes, task.meta["organs"]))
    acc = DiceAccumulator(task.classes)
    for batch in ctx.loader(task.test, batch_size=ctx.train.eval_batch_size):
        batch = to_device(batch, ctx.device)
        pred = predict(batch).argmax(dim=1)
        acc.update(pred.cpu(), batch["y"].cpu(), batch["case"].cpu())
    per_organ = acc.per_organ()
    if not per_organ:
        raise ValueError(f"task {task.name!r}: no test case contains any of its organs {list(names.values())}")
    out: dict[str, float] = {"dice": 100.0 * float(np.mean(list(per_organ.values())))}
    out.update({f"dice/{names[o]}": 100.0 * d for o, d in per_organ.items()})
    out["n"] = len(per_organ)
    return out


def step_means(R, n=None) -> list[dict[str, float]]:
    """Per step t: organ-weighted mean Dice over old organs (tasks < t), new organs (task t) and all seen organs.

    ``R`` is the (T+1, T) Dice matrix of cl_suite.metrics (row 0 before training) and ``n`` the organs per task;
    the ``seg_old``/``seg_new``/``seg_all`` summaries are the last of these steps.
    """
    R = np.asarray(R, dtype=float)
    T = R.shape[1]
    w = np.ones(T) if n is None else np.asarray(n, dtype=float)

    def mean(values, weights):
        return float(np.sum(values * weights) / np.sum(weights)) if len(values) else float("nan")

    return [{"old": mean(R[t + 1, :t], w[:t]), "new": float(R[t + 1, t]), "all": mean(R[t + 1, : t + 1], w[: t + 1])}
            for t in range(T)]  # fmt: skip
