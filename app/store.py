"""Cached access to the two results roots the app shows: the published runs (``results/published`` of this checkout,
or ``cl-suite app --published DIR``) and the user's own runs (``--results DIR``), never mixed in one table.

The cache key is the root's modification state (name, mtime and size of every run record, eval log, train log and
reference file), so a new or finished run shows up on the next rerun, and an unchanged root is read once.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any, NamedTuple

import pandas as pd
import streamlit as st

from cl_suite import results
from cl_suite.reference import REFERENCE_DIR

WATCHED = {results.RUN_FILE, results.EVALS_FILE, results.TRAIN_FILE}


class Loaded(NamedTuple):
    """Everything the pages read: the tidy run tables, the published numbers, and what could not be read."""

    runs: pd.DataFrame
    evals: pd.DataFrame
    reference: pd.DataFrame
    problems: list[str]

    @property
    def tables(self) -> results.RunTables:
        return results.RunTables(self.runs, self.evals)


PUBLISHED, YOURS = "Published runs", "Your runs"
SOURCES = (PUBLISHED, YOURS)
REPO_PUBLISHED = Path(__file__).resolve().parent.parent / "results" / "published"


def results_root() -> Path:
    """The user's root: ``cl-suite app --results DIR`` passes it as CL_SUITE_RESULTS."""
    return Path(os.environ.get("CL_SUITE_RESULTS") or "results").resolve()


def published_root() -> Path:
    """The published runs: ``cl-suite app --published DIR`` passes it as CL_SUITE_PUBLISHED."""
    return Path(os.environ.get("CL_SUITE_PUBLISHED") or REPO_PUBLISHED).resolve()


def root_of(source: str) -> Path:
    return published_root() if source == PUBLISHED else results_root()


def has_runs(root: Path) -> bool:
    return any((root / "runs").glob(f"*/{results.RUN_FILE}"))


def root_state(root: Path) -> tuple[tuple[str, int, int], ...]:
    """(relative path, mtime_ns, size) of every file the app reads under ``root``; checkpoints are not walked."""
    entries = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d != "checkpoints")
        in_reference = Path(folder).name == REFERENCE_DIR
        for name in files:
            if name in WATCHED or (in_reference and name.endswith((".yaml", ".yml"))):
                path = Path(folder) / name
                try:
                    stat = path.stat()
                except OSError:
                    continue
                entries.append((str(path.relative_to(root)), stat.st_mtime_ns, stat.st_size))
    return tuple(sorted(entries))


@st.cache_data(show_spinner="Reading the results store…", max_entries=4)
def _load(root: str, state: tuple, own_only: bool = False) -> Loaded:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tables = results.load_runs(root)
        reference = results.load_reference(root)
    runs, evals = tables.runs, tables.evals
    if own_only:  # a published/ folder under the user's root is shown as the published runs, not mixed in here
        runs = runs[~runs["published"].fillna(False).astype(bool)]
        evals = evals[evals["run_id"].isin(set(runs["run_id"]))]
    return Loaded(runs, evals, reference, [str(w.message) for w in caught])


def load(source: str = YOURS) -> Loaded:
    """The tables of one source (PUBLISHED or YOURS)."""
    root = root_of(source)
    return _load(str(root), root_state(root), own_only=source == YOURS)


@st.cache_data(max_entries=32)
def _run_detail(path: str, state: tuple) -> tuple[dict[str, Any], list[dict[str, Any]], list[str]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        record, _ = results.load_run(path)
        train = results.RunStore(path).read_lines(results.TRAIN_FILE)
    return record, train, [str(w.message) for w in caught]


def run_detail(path: str) -> tuple[dict[str, Any], list[dict[str, Any]], list[str]]:
    """(run.json, train.jsonl rows, problems) of one run folder listed in the loaded tables."""
    folder = Path(path)
    state = tuple((n, (folder / n).stat().st_mtime_ns) for n in sorted(WATCHED) if (folder / n).exists())
    return _run_detail(str(folder), state)
