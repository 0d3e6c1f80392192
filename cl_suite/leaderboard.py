"""Leaderboard tables from the results store: mean ± std over seeds per scenario × strategy × backbone.

Shared by ``cl-suite leaderboard`` and the web app, so both show the same numbers.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from cl_suite import metrics, safe_text
from cl_suite.results import RunTables

GROUP = ["scenario", "strategy", "backbone"]
COST = ["wall_s", "peak_mem_mb", "trainable_params", "added_inference_params"]


def summary_columns(runs: pd.DataFrame) -> list[str]:
    """Summary names present in these runs, in the order the scenarios list them."""
    names: list[str] = []
    for listed in runs.get("summary_names", pd.Series(dtype=object)).dropna():
        names += [n for n in listed if n not in names]
    return names or [n for n in metrics.SUMMARIES if n in runs.columns]


def leaderboard(tables: RunTables, scenario: str | None = None) -> pd.DataFrame:
    """One row per (scenario, strategy, backbone) over successful runs: ``<summary>_mean``, ``<summary>_std``,
    ``n_seeds`` and mean costs, ranked within each scenario by its first summary in that summary's direction."""
    runs = tables.runs
    runs = runs[runs["status"] == "success"]
    if scenario is not None:
        runs = runs[runs["scenario"] == scenario]
    if runs.empty:
        return pd.DataFrame(columns=[*GROUP, "n_seeds"])
    runs = runs.assign(backbone=runs["backbone"].fillna("unknown"))
    frames = []
    for scen, group in runs.groupby("scenario", sort=True):
        names = summary_columns(group)
        direction = group["direction"].dropna().iloc[0] if group["direction"].notna().any() else "max"
        rows = []
        for (strategy, backbone), cell in group.groupby(["strategy", "backbone"], sort=True):
            row = {"scenario": scen, "strategy": strategy, "backbone": backbone, "n_seeds": cell["seed"].nunique(),
                   "metric": cell["metric"].iloc[0]}  # fmt: skip
            for name in names:
                values = pd.to_numeric(cell.get(name), errors="coerce").dropna()
                row[f"{name}_mean"] = values.mean() if len(values) else np.nan
                row[f"{name}_std"] = values.std(ddof=0) if len(values) else np.nan
            for name in COST:
                row[name] = pd.to_numeric(cell[name], errors="coerce").mean()
            rows.append(row)
        table = pd.DataFrame(rows)
        rank_by = f"{names[0]}_mean"
        known = names[0] in metrics.SUMMARIES and direction in ("max", "min")  # a foreign record may name anything
        ascending = known and metrics.direction(names[0], direction) == "min"
        frames.append(table.sort_values(rank_by, ascending=ascending, na_position="last"))
    return pd.concat(frames, ignore_index=True)


def select(tables: RunTables, **equals: str | None) -> RunTables:
    """The runs whose columns equal the given values (None means any), e.g. ``select(t, backbone="b", setting="cil")``;
    evaluation rows are kept for the selected runs only."""
    runs = tables.runs
    for column, value in equals.items():
        if value is not None:
            runs = runs[runs[column].fillna("unknown" if column == "backbone" else "") == value]
    return RunTables(runs, tables.evals[tables.evals["run_id"].isin(runs["run_id"])])


def display_table(board: pd.DataFrame) -> pd.DataFrame:
    """Human-facing columns: ``mean ± std`` strings for summaries, rounded costs."""
    if board.empty:
        return board
    out = board[[*GROUP, "n_seeds"]].copy()
    for column in board.columns:
        if column.endswith("_mean"):
            name = column[: -len("_mean")]
            out[name] = [_pm(m, s) for m, s in zip(board[column], board[f"{name}_std"])]
    out["wall_s"] = board["wall_s"].round(1)
    out["peak_mem_mb"] = board["peak_mem_mb"].round(1)
    out["params_trained"] = board["trainable_params"].map(_count)
    out["params_added"] = board["added_inference_params"].map(_count)
    return out


def render(board: pd.DataFrame, fmt: str) -> str:
    """The board as text, markdown, CSV or LaTeX. Names come from run records someone may have crafted: control
    characters are escaped in every format, a CSV cell a spreadsheet would run as a formula (=, +, -, @) is
    quoted with an apostrophe, and LaTeX specials are escaped."""
    table = display_table(board)
    if table.empty:
        return "no successful runs under this results root"
    if fmt == "csv":
        return _cells(board, lambda v: safe_text.csv_cell(safe_text.one_line(v))).to_csv(index=False)
    table = _cells(table, safe_text.one_line)
    if fmt == "markdown":
        return _cells(table, lambda v: v.replace("|", "\\|")).to_markdown(index=False)
    if fmt == "latex":
        return _cells(table, safe_text.latex).to_latex(index=False, escape=False)
    return table.to_string(index=False)


def _cells(frame: pd.DataFrame, clean) -> pd.DataFrame:
    """``frame`` with ``clean`` applied to every string cell and column name."""
    out = frame.copy()
    for column in out.columns:
        out[column] = [clean(v) if isinstance(v, str) else v for v in out[column]]
    return out.rename(columns=lambda c: clean(c) if isinstance(c, str) else c)


def _pm(mean: float, std: float) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "-"
    return f"{mean:.2f} ± {0.0 if math.isnan(std) else std:.2f}"


def _count(value: float) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{int(value):,}"
