"""Curves over tasks and cost/score trade-offs, computed from the results store for the app's Run and Compare pages.

Everything here is a function of the stored score matrix (through cl_suite.metrics), so a curve's last point is the
same number as the run's summary: the seen-task average after the last task is ``last`` and the forgetting after the
last task is ``forgetting``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from cl_suite import metrics
from cl_suite.results import RunTables, score_matrix


def run_matrix(tables: RunTables, run_id: str) -> np.ndarray:
    """The primary-metric score matrix of one run, shape (T+1, T), row 0 before training (NaN where missing)."""
    run = tables.runs.loc[tables.runs["run_id"] == run_id].iloc[0]
    evals = tables.evals[tables.evals["run_id"] == run_id]
    R, _ = score_matrix(evals, run["metric"], int(run["num_tasks"]))
    return R


def step_curves(R: np.ndarray) -> pd.DataFrame:
    """Per training step t (1-based): the mean score over the tasks seen so far, and max-based forgetting so far.

    Forgetting after step t is :func:`cl_suite.metrics.forgetting` on the matrix truncated to the first t tasks, so
    the last point equals the run's ``forgetting`` summary. It is undefined (NaN) after the first task.
    """
    T = R.shape[1]
    seen = metrics.seen_average(R)
    forgetting = [metrics.forgetting(R[: t + 2, : t + 1]) for t in range(T)]
    return pd.DataFrame({"step": np.arange(1, T + 1), "score": seen, "forgetting": forgetting})


def task_curves(R: np.ndarray, task_names: list[str] | None = None) -> pd.DataFrame:
    """Long table of each task's score across training: one row per (after step, evaluated task)."""
    T = R.shape[1]
    names = task_names if task_names and len(task_names) == T else [f"task {j + 1}" for j in range(T)]
    rows = [{"step": i, "after": "before" if i == 0 else f"after {names[i - 1]}", "task": names[j], "score": R[i, j]}
            for i in range(T + 1) for j in range(T)]  # fmt: skip
    return pd.DataFrame(rows)


def runs_curves(tables: RunTables, run_ids: list[str]) -> pd.DataFrame:
    """Step curves of several runs, labelled by run id, strategy and seed."""
    frames = []
    runs = tables.runs.set_index("run_id")
    for run_id in run_ids:
        curves = step_curves(run_matrix(tables, run_id))
        run = runs.loc[run_id]
        frames.append(curves.assign(run_id=run_id, strategy=run["strategy"], seed=run["seed"],
                                    label=f"{run['strategy']} (seed {run['seed']})"))  # fmt: skip
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def strategy_curves(tables: RunTables, scenario: str, strategies: list[str]) -> pd.DataFrame:
    """Step curves averaged over the successful seeds of each (strategy, backbone) on one scenario: mean and std."""
    runs = tables.runs
    chosen = runs[(runs["scenario"] == scenario) & runs["strategy"].isin(strategies) & (runs["status"] == "success")]
    per_run = runs_curves(tables, list(chosen["run_id"]))
    if per_run.empty:
        return per_run
    per_run = per_run.merge(chosen[["run_id", "backbone"]].fillna("unknown"), on="run_id")
    grouped = per_run.groupby(["strategy", "backbone", "step"])
    out = grouped[["score", "forgetting"]].agg(["mean", "std"]).reset_index()
    out.columns = ["_".join(c).rstrip("_") for c in out.columns]
    out["n_seeds"] = grouped["seed"].nunique().to_numpy()
    out["label"] = out["strategy"] + " · " + out["backbone"]
    return out


def pareto_front(cost, score, *, maximize: bool = True) -> np.ndarray:
    """Mask of the points no other point beats on both axes (lower cost, better score). NaN points are never on it."""
    cost, score = np.asarray(cost, dtype=float), np.asarray(score, dtype=float)
    score = score if maximize else -score
    ok = ~(np.isnan(cost) | np.isnan(score))
    front = np.zeros(len(cost), dtype=bool)
    for i in np.flatnonzero(ok):
        others = ok & (cost <= cost[i]) & (score >= score[i]) & ((cost < cost[i]) | (score > score[i]))
        front[i] = not others.any()
    return front
