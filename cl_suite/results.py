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
import shutil
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


class RecordError(ValueError):
    """A run folder whose run.json is missing, torn or not a run record: the message names the file."""


class StorageError(OSError):
    """The results root cannot hold a new run folder (a file in the way, read-only, full): nothing was created."""


def inside(path: str | Path, root: str | Path) -> bool:
    """Whether ``path``, with every symlink resolved, lies inside ``root`` (also resolved)."""
    return Path(path).resolve().is_relative_to(Path(root).resolve())


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
        """Make ``root/runs/run_id`` and lock it before anything is in it (so no one can resume it meanwhile).
        Raises FileExistsError for a taken id, StorageError (and leaves nothing) when the root cannot hold it."""
        from cl_suite.locks import FolderLock

        check_root(root)
        path = Path(root) / "runs" / run_id
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.mkdir()
        except FileExistsError:
            raise
        except OSError as e:
            raise StorageError(f"cannot create a run folder under {root}: {e.strerror or e}") from e
        store = cls(path)
        try:
            store.lock = FolderLock(path, f"run folder {path}").acquire()
            (path / "checkpoints").mkdir()
            atomic_write(path / CONFIG_FILE, config_yaml)
            store.write_record({"schema_version": SCHEMA_VERSION, "run_id": run_id, "status": "running", **record})
        except OSError as e:  # e.g. the disk filled up: a folder without run.json would only confuse later runs
            store.release()
            shutil.rmtree(path, ignore_errors=True)
            raise StorageError(f"cannot write the run folder {path}: {e.strerror or e}") from e
        return store

    lock = None

    def acquire(self) -> RunStore:
        """Take this run folder's lock (locks.Busy if another process writes it), then drop the temp files an
        interrupted write left behind: a holder of the lock is the only writer, so no one else is writing them."""
        from cl_suite.locks import FolderLock

        if self.lock is None:
            self.lock = FolderLock(self.path, f"run {self.path.name}").acquire()
        for tmp in [*self.path.glob(".*.tmp"), *(self.path / "checkpoints").glob(".*.tmp")]:
            tmp.unlink(missing_ok=True)
        return self

    def release(self) -> None:
        if self.lock is not None:
            self.lock.release()
            self.lock = None

    # -- run.json ---------------------------------------------------------------------------------------------
    def read_record(self) -> dict[str, Any]:
        return read_record(self.path)

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
        found = self.checkpoints()
        return found[0] if found else None

    def checkpoints(self) -> list[tuple[int, Path]]:
        """(task index, path) of every kept checkpoint, newest first."""
        found = sorted((self.path / "checkpoints").glob("task-[0-9][0-9][0-9].pt"), reverse=True)
        return [(int(p.stem.split("-")[1]), p) for p in found]


def check_root(root: str | Path) -> None:
    """Refuse a results root that is a file, or that is not writable, before any run folder is made."""
    root = Path(root)
    existing = next((p for p in (root, *root.parents) if p.exists()), None)
    if root.exists() and not root.is_dir():
        raise StorageError(f"the results root {root} is a file, not a folder; pass --results DIR")
    if existing is not None and existing.is_dir() and not os.access(existing, os.W_OK | os.X_OK):
        raise StorageError(f"the results root {root} is not writable ({existing} is read-only); pass --results DIR")
    if existing is not None and not existing.is_dir():
        raise StorageError(f"the results root {root} cannot be made: {existing} is a file; pass --results DIR")


def read_record(path: str | Path) -> dict[str, Any]:
    """run.json of a run folder, checked to be a run record; RecordError names the file and what is wrong."""
    file = Path(path) / RUN_FILE
    try:
        record = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise RecordError(f"{file} is missing: this is not a run folder") from e
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise RecordError(f"{file} cannot be read ({e}); the run record is damaged: re-run its config.yaml "
                          "with `cl-suite run` to start over") from e  # fmt: skip
    _validate(record, Path(path))
    return record


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
    return read_record(path), _read_jsonl(path / EVALS_FILE)


def _validate(record: Any, path: Path) -> None:
    if not isinstance(record, dict):
        raise RecordError(f"{path / RUN_FILE} does not hold a JSON object")
    if record.get("schema_version") != SCHEMA_VERSION:
        raise RecordError(f"{path / RUN_FILE}: schema_version {record.get('schema_version')!r} != {SCHEMA_VERSION}")
    missing = [k for k in ("run_id", "status", "scenario", "strategy") if k not in record]
    if missing:
        raise RecordError(f"{path / RUN_FILE}: missing {', '.join(missing)}")


def load_runs(root: str | Path) -> RunTables:
    """Every run under ``root`` (searched recursively, so ``runs/`` and ``published/`` both count).

    A file that cannot be read as a run record is skipped with a warning; the loader never raises on content.
    """
    root = Path(root)
    run_rows, eval_rows = [], []
    for run_file in sorted(root.rglob(RUN_FILE)) if root.exists() else []:
        folder = run_file.parent
        if not inside(run_file, root):
            warnings.warn(f"skipped {run_file}: it links outside the results root {root}", stacklevel=2)
            continue
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
    numbers = [pd.to_numeric(rows[c], errors="coerce") for c in ("after_task", "eval_task", "value", "n")]
    for after, task, value, count in zip(*numbers):  # a foreign or damaged row (a string, null) reads as missing
        if -1 <= after < num_tasks and 0 <= task < num_tasks:
            R[int(after) + 1, int(task)] = np.nan if value is None else value
            if count is not None and not pd.isna(count):
                n[int(task)] = count
    return R, (None if np.isnan(n).any() else n)
