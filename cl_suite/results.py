"""Run records on disk, and loading them into pandas.

A run folder ``<root>/runs/<run_id>/`` holds:

- ``run.json``: schema version, ids, status (running/success/failed), the resolved config, environment, cost,
  summary and per-task strategy stats. Rewritten atomically (temp file + rename), never half-written.
- ``config.yaml``: the resolved config; ``cl-suite run <that file>`` re-runs it.
- ``evals.jsonl``: one line per (after_task, eval_task, metric), appended and flushed line by line.
  ``after_task = -1`` is the evaluation before any training.
- ``train.jsonl``: training losses and strategy logs.
- ``checkpoints/``: state after each finished task, for ``--resume``.

:func:`load_runs` is the one reader the CLI and the app share, so a number cannot differ between them. It skips
corrupted or foreign files under the root with a warning instead of failing.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from cl_suite.reference import protocol_of

SCHEMA_VERSION = 1
STATUSES = ("running", "success", "failed")
RUN_FILE, EVALS_FILE, TRAIN_FILE, CONFIG_FILE = "run.json", "evals.jsonl", "train.jsonl", "config.yaml"
EVAL_COLUMNS = ["run_id", "after_task", "eval_task", "metric", "value", "n"]


def atomic_write(path: Path, data: bytes | str) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and a rename."""
    path = Path(path)
    mode = "wb" if isinstance(data, bytes) else "w"
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _clean(value: Any) -> Any:
    """NaN/inf become None so run.json stays strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def dumps(value: Any) -> str:
    return json.dumps(_clean(value), default=_json_default, allow_nan=False)


class RunStore:
    """Writes one run folder. All state is on disk, so a killed process leaves a resumable folder."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    @classmethod
    def create(cls, root: str | Path, run_id: str, record: dict[str, Any], config_yaml: str) -> RunStore:
        path = Path(root) / "runs" / run_id
        path.mkdir(parents=True, exist_ok=False)
        store = cls(path)
        (path / "checkpoints").mkdir()
        atomic_write(path / CONFIG_FILE, config_yaml)
        store.write_record({"schema_version": SCHEMA_VERSION, "run_id": run_id, "status": "running", **record})
        return store

    # -- run.json ---------------------------------------------------------------------------------------------
    def read_record(self) -> dict[str, Any]:
        return json.loads((self.path / RUN_FILE).read_text())

    def write_record(self, record: dict[str, Any]) -> None:
        atomic_write(self.path / RUN_FILE, json.dumps(_clean(record), default=_json_default, indent=2))

    def update(self, **fields: Any) -> dict[str, Any]:
        record = self.read_record()
        record.update(fields)
        self.write_record(record)
        return record

    # -- line logs --------------------------------------------------------------------------------------------
    def append(self, filename: str, rows: list[dict[str, Any]]) -> None:
        with open(self.path / filename, "a", encoding="utf-8") as f:
            for row in rows:
                f.write(dumps(row) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def read_lines(self, filename: str) -> list[dict[str, Any]]:
        return _read_jsonl(self.path / filename)

    def truncate_after(self, task_index: int) -> None:
        """Drop log rows written after task ``task_index`` finished (a killed run's partial task)."""
        for filename, key in ((EVALS_FILE, "after_task"), (TRAIN_FILE, "task")):
            rows = [r for r in self.read_lines(filename) if r.get(key, -1) <= task_index]
            atomic_write(self.path / filename, "".join(dumps(r) + "\n" for r in rows))

    # -- checkpoints ------------------------------------------------------------------------------------------
    def checkpoint_path(self, task_index: int) -> Path:
        return self.path / "checkpoints" / f"task-{task_index:03d}.pt"

    def save_checkpoint(self, task_index: int, state: dict[str, Any], keep: str = "last") -> Path:
        import io

        import torch

        buffer = io.BytesIO()
        torch.save(state, buffer)
        target = self.checkpoint_path(task_index)
        atomic_write(target, buffer.getvalue())
        if keep == "last":
            for old in (self.path / "checkpoints").glob("task-*.pt"):
                if old != target:
                    old.unlink()
        return target

    def drop_checkpoints(self) -> None:
        """Delete every checkpoint (a finished run whose record is all that is kept)."""
        for old in (self.path / "checkpoints").glob("task-*.pt"):
            old.unlink()

    def latest_checkpoint(self) -> tuple[int, Path] | None:
        found = sorted((self.path / "checkpoints").glob("task-*.pt"))
        if not found:
            return None
        return int(found[-1].stem.split("-")[1]), found[-1]


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Rows of a JSON-lines file; a torn or corrupted line is skipped with a warning."""
    if not path.exists():
        return []
    rows = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                warnings.warn(f"{path}:{number}: skipped a line that is not valid JSON", stacklevel=2)
                continue
            if isinstance(row, dict):
                rows.append(row)
    return rows


class RunTables(NamedTuple):
    """The tidy tables of a results root: one row per run, one row per evaluation."""

    runs: pd.DataFrame
    evals: pd.DataFrame


RUN_COLUMNS = [
    "run_id", "status", "scenario", "strategy", "backbone", "setting", "seed", "metric", "direction",
    "num_tasks", "config_hash", "started_at", "ended_at", "wall_s", "peak_mem_mb", "trainable_params",
    "added_inference_params", "total_params", "summary_names", "error", "published", "path", "protocol", "tiny",
]  # fmt: skip


def _flatten(record: dict[str, Any], path: Path, root: Path) -> dict[str, Any]:
    cost = record.get("cost") or {}
    row = {
        **{k: record.get(k) for k in RUN_COLUMNS if k in record},
        **{k: cost.get(k) for k in ("wall_s", "peak_mem_mb", "trainable_params", "added_inference_params",
                                    "total_params")},
        "published": "published" in path.relative_to(root).parts,
        "path": str(path),
        "protocol": protocol_of(record),
    }  # fmt: skip
    for name, value in (record.get("summary") or {}).items():
        row[name] = value
    return row


def load_run(path: str | Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(run.json, eval rows) of one run folder. Raises on a missing or corrupted run.json."""
    path = Path(path)
    record = json.loads((path / RUN_FILE).read_text())
    _validate(record, path)
    return record, _read_jsonl(path / EVALS_FILE)


def _validate(record: Any, path: Path) -> None:
    if not isinstance(record, dict):
        raise ValueError(f"{path / RUN_FILE} does not hold a JSON object")
    if record.get("schema_version") != SCHEMA_VERSION:
        raise ValueError(f"{path / RUN_FILE}: schema_version {record.get('schema_version')!r} != {SCHEMA_VERSION}")
    missing = [k for k in ("run_id", "status", "scenario", "strategy") if k not in record]
    if missing:
        raise ValueError(f"{path / RUN_FILE}: missing {', '.join(missing)}")


def load_runs(root: str | Path) -> RunTables:
    """Every run under ``root`` (searched recursively, so ``runs/`` and ``published/`` both count).

    A file that cannot be read as a run record is skipped with a warning; the loader never raises on content.
    """
    root = Path(root)
    run_rows, eval_rows = [], []
    for run_file in sorted(root.rglob(RUN_FILE)) if root.exists() else []:
        folder = run_file.parent
        try:
            record, evals = load_run(folder)
        except (OSError, ValueError, UnicodeDecodeError) as e:
            warnings.warn(f"skipped {run_file}: {e}", stacklevel=2)
            continue
        run_rows.append(_flatten(record, folder, root))
        for row in evals:
            if {"after_task", "eval_task", "metric", "value"} <= row.keys():
                eval_rows.append({"run_id": record["run_id"], "n": None, **row})
    runs = pd.DataFrame(run_rows)
    for column in RUN_COLUMNS:
        if column not in runs:
            runs[column] = pd.Series(dtype=object)
    evals = pd.DataFrame(eval_rows, columns=EVAL_COLUMNS)
    return RunTables(runs, evals)


def load_reference(root: str | Path) -> pd.DataFrame:
    """Published paper numbers under ``<root>/reference/`` (cl_suite.reference): shown apart from runs."""
    from cl_suite.reference import load_reference as load

    return load(root)


def score_matrix(evals: pd.DataFrame, metric: str, num_tasks: int) -> tuple[np.ndarray, np.ndarray | None]:
    """(R, n) of one run from its eval rows: R has shape (T+1, T), row 0 before training; NaN where missing."""
    R = np.full((num_tasks + 1, num_tasks), np.nan)
    n = np.full(num_tasks, np.nan)
    rows = evals[evals["metric"] == metric]
    for after, task, value, count in zip(rows["after_task"], rows["eval_task"], rows["value"], rows["n"]):
        if -1 <= after < num_tasks and 0 <= task < num_tasks:
            R[int(after) + 1, int(task)] = np.nan if value is None else value
            if count is not None and not pd.isna(count):
                n[int(task)] = count
    return R, (None if np.isnan(n).any() else n)
