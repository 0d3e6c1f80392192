"""Continual-learning metrics as pure functions of the score matrix.

Convention: ``R`` has shape ``(T + 1, T)``. Row 0 is the evaluation before any training (the zero-shot or
initial model, DESIGN.md's row -1); row ``i + 1`` is the evaluation after training task ``i``; column ``j`` is
task ``j``'s test set. ``n`` (optional, shape ``(T,)``) weighs the columns, e.g. test-set sizes, for the
sample-weighted variants. Formulas and their variants follow ../shared/reference/benchmarks.md §1; where papers
disagree (forgetting max-based vs Avalanche's first-minus-last, BWT divided by T-1 vs T) both are here, named apart.

Every summary has a direction *relative to the underlying metric* (``same``: higher is better when the metric's
higher is better; ``opposite``: forgetting). :func:`direction` turns that into ``max``/``min``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np


def _check(R) -> np.ndarray:
    R = np.asarray(R, dtype=float)
    if R.ndim != 2 or R.shape[0] != R.shape[1] + 1:
        raise ValueError(f"score matrix must have shape (T+1, T) with the pre-training row first, got {R.shape}")
    return R


def _weights(n, T: int) -> np.ndarray:
    return np.ones(T) if n is None else np.asarray(n, dtype=float)


def _wmean(values: np.ndarray, weights: np.ndarray) -> float:
    return float(np.sum(values * weights) / np.sum(weights)) if len(values) and np.sum(weights) > 0 else float("nan")


# -- general ---------------------------------------------------------------------------------------------------
def last(R, n=None) -> float:
    """Final average: mean over tasks of the score after the last task (MTIL "Last", TRACE OP_T, ACC)."""
    R = _check(R)
    return float(np.mean(R[-1]))


def last_weighted(R, n=None) -> float:
    """Final score on the union of all test sets (sample-weighted): PyCIL/PILOT's class-incremental "last"."""
    R = _check(R)
    return _wmean(R[-1], _weights(n, R.shape[1]))


def seen_average(R, n=None, *, weighted: bool = False) -> np.ndarray:
    """Per step t: the mean score over the tasks seen so far (tasks 0..t). Shape (T,)."""
    R = _check(R)
    w = _weights(n if weighted else None, R.shape[1])
    return np.array([_wmean(R[t + 1, : t + 1], w[: t + 1]) for t in range(R.shape[1])])


def avg_inc(R, n=None) -> float:
    """Average incremental accuracy (Rebuffi et al.): mean over steps of the mean over seen tasks."""
    return float(np.mean(seen_average(R)))


def avg_inc_weighted(R, n=None) -> float:
    """Average incremental accuracy over the union test set of the seen tasks (PyCIL/PILOT, continuum)."""
    return float(np.mean(seen_average(R, n, weighted=True)))


def bwt(R, n=None) -> float:
    """Backward transfer (Lopez-Paz & Ranzato): mean over j < T-1 of R[T-1, j] - R[j, j]. Negative = forgetting."""
    R = _check(R)
    T = R.shape[1]
    if T < 2:
        return float("nan")
    return float(np.mean([R[-1, j] - R[j + 1, j] for j in range(T - 1)]))


def fwt(R, n=None) -> float:
    """Forward transfer (Lopez-Paz): mean over j >= 1 of R[j-1, j] - R[-1, j] (score before training on j,
    against the pre-training row)."""
    R = _check(R)
    T = R.shape[1]
    if T < 2:
        return float("nan")
    return float(np.mean([R[j, j] - R[0, j] for j in range(1, T)]))


def forgetting(R, n=None) -> float:
    """Forgetting (Chaudhry et al. 2018, max-based; Mammoth, PyCIL, continuum): mean over j < T-1 of
    max over l in [j, T-2] of R[l, j], minus R[T-1, j]."""
    R = _check(R)
    T = R.shape[1]
    if T < 2:
        return float("nan")
    return float(np.mean([np.max(R[j + 1 : T, j]) - R[-1, j] for j in range(T - 1)]))


def forgetting_first_last(R, n=None) -> float:
    """Avalanche's forgetting: score just after learning j minus the final score, averaged over j < T-1.
    Equals -bwt. Not the max-based definition."""
    R = _check(R)
    T = R.shape[1]
    if T < 2:
        return float("nan")
    return float(np.mean([R[j + 1, j] - R[-1, j] for j in range(T - 1)]))


# -- MTIL / X-TAIL (ZSCL results.ipynb) --------------------------------------------------------------------------
def mtil_transfer(R, n=None) -> float:
    """MTIL Transfer: for each task j >= 1, the mean score on j over the steps before training it (the strict
    upper triangle of the trained rows), averaged over j. Measures zero-shot retention on unseen tasks."""
    R = _check(R)
    T = R.shape[1]
    if T < 2:
        return float("nan")
    return float(np.mean([np.mean(R[1 : j + 1, j]) for j in range(1, T)]))


def mtil_avg(R, n=None) -> float:
    """MTIL Avg.: the mean of the whole T x T matrix of trained rows."""
    R = _check(R)
    return float(np.mean(R[1:]))


# -- TRACE -------------------------------------------------------------------------------------------------------
def trace_op(R, n=None) -> float:
    """TRACE overall performance OP_T: mean over all tasks after the last one (same value as ``last``)."""
    return last(R)


def trace_bwt(R, n=None) -> float:
    """TRACE BWT_T = 1/T sum_i (R[T, i] - R[i, i]): divided by T (the last term is 0), unlike Lopez-Paz's T-1."""
    R = _check(R)
    T = R.shape[1]
    return float(np.mean([R[-1, i] - R[i + 1, i] for i in range(T)]))


# -- FSCIL (sessions = tasks; task 0 is the base session) ---------------------------------------------------------
def fscil_sessions(R, n=None) -> np.ndarray:
    """Per-session accuracy A_s on the joint test set of all classes seen up to session s (sample-weighted)."""
    return seen_average(R, n, weighted=True)


def fscil_avg(R, n=None) -> float:
    """FSCIL AVG: the mean of the per-session accuracies."""
    return float(np.mean(fscil_sessions(R, n)))


def fscil_pd(R, n=None) -> float:
    """FSCIL performance drop PD = A_0 - A_last (lower is better)."""
    A = fscil_sessions(R, n)
    return float(A[0] - A[-1])


def fscil_base(R, n=None) -> float:
    """Accuracy on the base-session classes after the last session (predicting over all seen classes)."""
    return float(_check(R)[-1, 0])


def fscil_novel(R, n=None) -> float:
    """Accuracy on all novel-session classes after the last session, sample-weighted."""
    R = _check(R)
    return _wmean(R[-1, 1:], _weights(n, R.shape[1])[1:])


def fscil_hm(R, n=None) -> float:
    """Harmonic mean of base and novel accuracy after the last session."""
    b, v = fscil_base(R, n), fscil_novel(R, n)
    return float(2 * b * v / (b + v)) if b + v > 0 else 0.0


# -- segmentation (Dice per task = mean over the task's organs; n = organs per task) ------------------------------
def seg_old(R, n=None) -> float:
    """Mean Dice over the organs of earlier tasks after the last task (organ-weighted)."""
    R = _check(R)
    return _wmean(R[-1, :-1], _weights(n, R.shape[1])[:-1]) if R.shape[1] > 1 else float("nan")


def seg_new(R, n=None) -> float:
    """Dice on the organs of the last task after training it."""
    return float(_check(R)[-1, -1])


def seg_all(R, n=None) -> float:
    """Mean Dice over all organs after the last task (organ-weighted)."""
    return last_weighted(R, n)


def organ_means(dice: dict[str, float], old: Iterable[str], new: Iterable[str]) -> dict[str, float]:
    """Old/new/all means of a per-organ Dice dict after one step."""
    old, new = list(old), list(new)

    def mean(keys):
        vals = [dice[k] for k in keys if k in dice]
        return float(np.mean(vals)) if vals else float("nan")

    return {"old": mean(old), "new": mean(new), "all": mean(old + new)}


@dataclass(frozen=True)
class Summary:
    fn: Callable[..., float]
    relation: str  # "same" or "opposite" to the underlying metric's direction
    label: str


SUMMARIES: dict[str, Summary] = {
    "last": Summary(last, "same", "final average over tasks"),
    "last_weighted": Summary(last_weighted, "same", "final score on the union test set"),
    "avg_inc": Summary(avg_inc, "same", "average incremental (task mean)"),
    "avg_inc_weighted": Summary(avg_inc_weighted, "same", "average incremental (union test set)"),
    "bwt": Summary(bwt, "same", "backward transfer"),
    "fwt": Summary(fwt, "same", "forward transfer vs the pre-training row"),
    "forgetting": Summary(forgetting, "opposite", "forgetting, max-based"),
    "forgetting_first_last": Summary(forgetting_first_last, "opposite", "forgetting, Avalanche (first - last)"),
    "mtil_transfer": Summary(mtil_transfer, "same", "MTIL Transfer"),
    "mtil_avg": Summary(mtil_avg, "same", "MTIL Avg."),
    "mtil_last": Summary(last, "same", "MTIL Last"),
    "trace_op": Summary(trace_op, "same", "TRACE OP"),
    "trace_bwt": Summary(trace_bwt, "same", "TRACE BWT (divided by T)"),
    "fscil_avg": Summary(fscil_avg, "same", "FSCIL AVG over sessions"),
    "fscil_pd": Summary(fscil_pd, "opposite", "FSCIL performance drop"),
    "fscil_base": Summary(fscil_base, "same", "FSCIL base-class accuracy (last session)"),
    "fscil_novel": Summary(fscil_novel, "same", "FSCIL novel-class accuracy (last session)"),
    "fscil_hm": Summary(fscil_hm, "same", "FSCIL harmonic mean of base and novel"),
    "seg_old": Summary(seg_old, "same", "Dice on old organs"),
    "seg_new": Summary(seg_new, "same", "Dice on the last task's organs"),
    "seg_all": Summary(seg_all, "same", "Dice on all organs"),
}


def direction(summary: str, metric_direction: str) -> str:
    """``max``/``min`` for a summary of a metric whose own direction is ``metric_direction``."""
    if metric_direction not in ("max", "min"):
        raise ValueError(f"metric direction must be 'max' or 'min', not {metric_direction!r}")
    if SUMMARIES[summary].relation == "same":
        return metric_direction
    return "min" if metric_direction == "max" else "max"


def summarize(R, names: Sequence[str], n=None) -> dict[str, float | None]:
    """The named summaries of one score matrix; undefined values (e.g. BWT of one task) become None."""
    out = {}
    for name in names:
        if name not in SUMMARIES:
            raise KeyError(f"unknown summary {name!r}; known: {', '.join(SUMMARIES)}")
        value = SUMMARIES[name].fn(R, n)
        out[name] = None if value is None or np.isnan(value) else round(float(value), 6)
    return out
