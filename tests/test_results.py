"""Run folders: atomic writes, line logs, truncation for resume, and a loader that survives bad files."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from cl_suite import results
from cl_suite.results import RunStore, load_runs


def make_run(root, run_id="r1", status="success", scenario="s", strategy="a", seed=0, summary=None):
    store = RunStore.create(root, run_id, {"scenario": scenario, "strategy": strategy, "seed": seed,
                                           "metric": "acc", "direction": "max", "num_tasks": 2}, "seed: 0\n")  # fmt: skip
    rows = [{"after_task": a, "eval_task": e, "metric": "acc", "value": float(10 * (a + 2) + e), "n": 5}
            for a in (-1, 0, 1) for e in (0, 1)]  # fmt: skip
    store.append(results.EVALS_FILE, rows)
    store.update(status=status, summary=summary or {"last": 31.0}, backbone="b",
                 cost={"wall_s": 1.0, "trainable_params": 10, "added_inference_params": 0})  # fmt: skip
    return store


def test_create_writes_schema_and_config(tmp_path):
    store = make_run(tmp_path)
    record = store.read_record()
    assert record["schema_version"] == results.SCHEMA_VERSION and record["status"] == "success"
    assert (store.path / "config.yaml").read_text() == "seed: 0\n"
    assert not list(store.path.glob(".*.tmp")), "no temporary files left behind"
    with pytest.raises(FileExistsError):
        RunStore.create(tmp_path, "r1", {}, "")


def test_atomic_write_keeps_old_content_when_writing_fails(tmp_path):
    target = tmp_path / "f.json"
    results.atomic_write(target, "old")

    class Boom:
        def __str__(self):
            raise RuntimeError

    with pytest.raises(TypeError):
        results.atomic_write(target, Boom())  # neither bytes nor str: the write fails mid-way
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.json"]


def test_nan_is_stored_as_null(tmp_path):
    store = make_run(tmp_path, summary={"bwt": float("nan"), "last": 1.0})
    assert json.loads((store.path / "run.json").read_text())["summary"]["bwt"] is None


def test_truncate_after_drops_rows_of_unfinished_tasks(tmp_path):
    store = make_run(tmp_path)
    store.append(results.TRAIN_FILE, [{"task": 0, "loss": 1.0}, {"task": 1, "loss": 2.0}])
    store.truncate_after(0)
    assert {r["after_task"] for r in store.read_lines(results.EVALS_FILE)} == {-1, 0}
    assert [r["task"] for r in store.read_lines(results.TRAIN_FILE)] == [0]


def test_checkpoints_keep_last_or_all(tmp_path):
    store = make_run(tmp_path)
    for t in range(3):
        store.save_checkpoint(t, {"task": t}, keep="last")
    assert [p.name for p in (store.path / "checkpoints").iterdir()] == ["task-002.pt"]
    assert store.latest_checkpoint()[0] == 2
    store.save_checkpoint(3, {"task": 3}, keep="all")
    assert len(list((store.path / "checkpoints").iterdir())) == 2


def test_load_runs_tables_and_score_matrix(tmp_path):
    make_run(tmp_path, "r1", seed=0)
    make_run(tmp_path, "r2", seed=1)
    tables = load_runs(tmp_path)
    assert sorted(tables.runs["run_id"]) == ["r1", "r2"]
    assert set(tables.runs.columns) >= {"scenario", "strategy", "backbone", "seed", "last", "wall_s", "published"}
    one = tables.evals[tables.evals["run_id"] == "r1"]
    R, n = results.score_matrix(one, "acc", 2)
    assert R.tolist() == [[10.0, 11.0], [20.0, 21.0], [30.0, 31.0]]
    assert n.tolist() == [5, 5]


def test_loader_skips_corrupted_and_foreign_files(tmp_path):
    make_run(tmp_path, "good")
    (tmp_path / "runs" / "torn").mkdir()
    (tmp_path / "runs" / "torn" / "run.json").write_text('{"schema_version": 1, "run_id": ')
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "run.json").write_text('{"hello": "world"}')
    (tmp_path / "runs" / "old").mkdir()
    (tmp_path / "runs" / "old" / "run.json").write_text('{"schema_version": 0, "run_id": "old"}')
    with open(tmp_path / "runs" / "good" / "evals.jsonl", "a") as f:
        f.write('{"after_task": 1, "eval_task"')  # a torn last line
    with pytest.warns(UserWarning) as caught:
        tables = load_runs(tmp_path)
    assert list(tables.runs["run_id"]) == ["good"]
    assert len(tables.evals) == 6
    assert len(caught) == 4


def test_empty_or_missing_root_gives_empty_tables(tmp_path):
    for root in (tmp_path, tmp_path / "missing"):
        tables = load_runs(root)
        assert isinstance(tables.runs, pd.DataFrame) and tables.runs.empty and tables.evals.empty
        assert "scenario" in tables.runs.columns


def test_score_matrix_marks_missing_cells_nan():
    evals = pd.DataFrame([{"after_task": -1, "eval_task": 0, "metric": "acc", "value": 1.0, "n": None}])
    R, n = results.score_matrix(evals, "acc", 2)
    assert R[0, 0] == 1.0 and np.isnan(R[1:]).all() and n is None
