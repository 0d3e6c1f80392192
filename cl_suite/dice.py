"""Dice and HD95 per organ for segmentation scenarios, over whole cases, from MONAI's metrics.

``Dice_c = 2|P ∩ G| / (|P| + |G|)`` (../shared/reference/benchmarks.md §1, as in MrGiovanni/ContinualLearning's
``test.py``), computed by ``monai.metrics.DiceMetric``; HD95 by ``monai.metrics.HausdorffDistanceMetric``
(``percentile=95``, in mm when the test set gives the voxel spacing). A volume is scored as a whole: slices
predicted one by one are stacked back into their case first, so slice-by-slice prediction still gives 3D Dice. A case
whose ground truth lacks an organ is left out of that organ's mean (MONAI's ``ignore_empty=True``); an organ absent
from every case has no Dice. The scenario's score of a task is the mean over the task's organs, in percent, with
``n`` = number of organs so the organ-weighted summaries (cl_suite.metrics ``seg_*``) weigh tasks correctly.

:class:`DiceAccumulator` is the suite's earlier hand-written Dice (sums per case and organ); it is kept as the
cross-check the tests hold MONAI's numbers against, and evaluation uses MONAI.
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


def case_metrics(pred: torch.Tensor, target: torch.Tensor, organs: Sequence[int],
                 spacing: Sequence[float] | None = None) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """(Dice, HD95) per organ of one whole case, from MONAI's ``DiceMetric`` and ``HausdorffDistanceMetric``.

    ``pred`` and ``target`` are label maps of the same (spatial) shape in global organ ids. Dice is NaN where the
    ground truth lacks the organ (``ignore_empty=True``); HD95 (95th percentile of the symmetric surface distances,
    in the units of ``spacing``, voxels if None) is NaN where the prediction or the ground truth lacks the organ.
    """
    import warnings

    from monai.metrics import DiceMetric, HausdorffDistanceMetric

    organs = torch.as_tensor(list(organs), dtype=pred.dtype)
    shape = (1, len(organs), *pred.shape)
    p = (pred.unsqueeze(0) == organs.view(-1, *([1] * pred.ndim))).reshape(shape).float()
    g = (target.unsqueeze(0) == organs.view(-1, *([1] * target.ndim))).reshape(shape).float()
    dice = DiceMetric(include_background=True, reduction="none", ignore_empty=True)(p, g)[0].numpy()
    both = (p.flatten(2).sum(-1) > 0) & (g.flatten(2).sum(-1) > 0)
    hd95 = np.full(len(organs), np.nan)
    if bool(both.any()):
        keep = both[0]
        with warnings.catch_warnings():  # MONAI warns about empty masks; those organs are NaN by definition here
            warnings.simplefilter("ignore")
            metric = HausdorffDistanceMetric(include_background=True, percentile=95, reduction="none")
            values = metric(p[:, keep], g[:, keep], spacing=None if spacing is None else [float(s) for s in spacing])
        hd95[keep.numpy()] = values[0].numpy()
    return dice, hd95


class CaseCollector:
    """Gathers predictions per case: whole volumes (3D batches) or the slices of a case in order (2D batches)."""

    def __init__(self) -> None:
        self.pred: dict[int, list[torch.Tensor]] = defaultdict(list)
        self.target: dict[int, list[torch.Tensor]] = defaultdict(list)
        self.spacing: dict[int, torch.Tensor] = {}

    def update(self, pred: torch.Tensor, target: torch.Tensor, cases: torch.Tensor,
               spacing: torch.Tensor | None = None) -> None:  # fmt: skip
        """``pred``/``target``: (B, H, W) slices or (B, D, H, W) volumes; ``cases`` (B,); ``spacing`` (B, ndim)."""
        volumes = pred.ndim == 4
        for i, case in enumerate(cases.tolist()):
            self.pred[case].append(pred[i] if volumes else pred[i][None])
            self.target[case].append(target[i] if volumes else target[i][None])
            if spacing is not None:
                self.spacing[case] = spacing[i]

    def cases(self):
        """(case, prediction volume, ground-truth volume, spacing or None) per case, in case order."""
        for case in sorted(self.pred):
            pred, target = self.pred[case], self.target[case]
            joined = (torch.cat(pred), torch.cat(target)) if pred[0].ndim == 3 and len(pred) > 1 else (pred[0], target[0])
            spacing = self.spacing.get(case)
            yield case, *joined, None if spacing is None else spacing.tolist()


@torch.no_grad()
def evaluate_dice(predict: Callable[[Batch], torch.Tensor], task: Task, ctx: Context) -> dict[str, float]:
    """``dice`` (percent, mean over the task's organs of the mean over cases), ``dice/<organ>``, ``hd95`` and
    ``hd95/<organ>`` (same means, over the cases where both masks are non-empty), and ``n`` (organs scored).

    ``task.classes`` are the task's global organ ids and ``task.meta["organs"]`` their names; batches carry
    ``x``, ``y`` (global ids, 0 = background), ``case`` and optionally ``spacing`` (mm per axis of ``y``). A test set
    with ``eval_batch_size`` set (whole volumes of different sizes) is read with that batch size.
    """
    names = dict(zip(task.classes, task.meta["organs"]))
    collector = CaseCollector()
    batch_size = getattr(task.test, "eval_batch_size", None) or ctx.train.eval_batch_size
    for batch in ctx.loader(task.test, batch_size=batch_size):
        spacing = batch.get("spacing")
        batch = to_device(batch, ctx.device)
        pred = predict(batch).argmax(dim=1)
        collector.update(pred.cpu(), batch["y"].cpu(), batch["case"].cpu(), spacing)
    dice: dict[int, list[float]] = defaultdict(list)
    hd95: dict[int, list[float]] = defaultdict(list)
    for _, pred, target, spacing in collector.cases():
        d, h = case_metrics(pred, target, task.classes, spacing)
        for organ, dv, hv in zip(task.classes, d, h):
            if np.isfinite(dv):
                dice[organ].append(float(dv))
            if np.isfinite(hv):
                hd95[organ].append(float(hv))
    per_organ = {o: float(np.mean(dice[o])) for o in task.classes if dice[o]}
    if not per_organ:
        raise ValueError(f"task {task.name!r}: no test case contains any of its organs {list(names.values())}")
    out: dict[str, float] = {"dice": 100.0 * float(np.mean(list(per_organ.values())))}
    out.update({f"dice/{names[o]}": 100.0 * d for o, d in per_organ.items()})
    per_organ_hd = {o: float(np.mean(hd95[o])) for o in task.classes if hd95[o]}
    if per_organ_hd:
        out["hd95"] = float(np.mean(list(per_organ_hd.values())))
        out.update({f"hd95/{names[o]}": h for o, h in per_organ_hd.items()})
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
