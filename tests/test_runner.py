"""The run loop on digits-tiny: matrix shape, forgetting, determinism, failure handling, compatibility."""

from __future__ import annotations

import io

import pytest
import torch

from cl_suite import config, results, runner
from cl_suite.api import Strategy
from cl_suite.config import ConfigError


def run(root, strategy="finetune", tiny=False, **overrides):
    cfg = config.resolve({"scenario": "digits-tiny", "strategy": strategy, "tiny": tiny},
                         {k.replace("__", "."): str(v) for k, v in overrides.items()})  # fmt: skip
    store = runner.start(cfg, root, out=io.StringIO(), progress=False)
    record, evals = results.load_run(store.path)
    import pandas as pd

    R, _ = results.score_matrix(pd.DataFrame(evals), record["metric"], record["num_tasks"])
    return record, R


class NanLoss(Strategy):
    """Returns a NaN loss on the second step."""

    def training_step(self, batch, task):
        loss = self.model.loss(batch, task)
        self.calls = getattr(self, "calls", 0) + 1
        return loss * float("nan") if self.calls == 2 else loss


class SegOnly(Strategy):
    supports = frozenset({"seg"})


class NeedsBlocksAndSomethingElse(Strategy):
    requires = frozenset({"blocks", "teleport"})


def test_finetune_forgets_and_joint_forgets_less(results_root):
    fine, R = run(results_root, "finetune")
    assert R.shape == (6, 5), "a zero-shot row plus one row per task, one column per task"
    assert fine["status"] == "success" and fine["num_tasks"] == 5
    assert fine["summary"]["forgetting"] > 30
    assert R[1, 0] > 80, "task 0 is learnt before it is forgotten"
    joint, _ = run(results_root, "joint")
    assert joint["summary"]["forgetting"] < fine["summary"]["forgetting"] - 30
    assert joint["summary"]["last"] > fine["summary"]["last"] + 30
    assert fine["cost"]["trainable_params"] > 0 and fine["cost"]["added_inference_params"] == 0
    assert fine["env"]["packages"]["torch"] == torch.__version__ and fine["env"]["git_sha"]


def test_same_seed_same_matrix_other_seed_differs(results_root):
    _, a = run(results_root, tiny=True, seed=3)
    _, b = run(results_root, tiny=True, seed=3)
    _, c = run(results_root, tiny=True, seed=4)
    assert (a == b).all()
    assert not (a == c).all()


def test_tiny_mode_is_small(results_root):
    record, R = run(results_root, tiny=True)
    assert R.shape == (3, 2)
    _, evals = results.load_run(results_root / "runs" / record["run_id"])
    assert {e["n"] for e in evals} <= set(range(1, 65))


def test_zero_shot_never_trains(results_root):
    record, _ = run(results_root, "zero-shot", tiny=True)
    assert record["cost"]["trainable_params"] == 0
    train_log = (results_root / "runs" / record["run_id"] / "train.jsonl")
    assert not train_log.exists() or not train_log.read_text().strip()


def test_nan_loss_fails_the_run_with_a_clear_message(results_root):
    with pytest.raises(runner.NonFiniteLoss, match="step 1: loss is nan"):
        run(results_root, "test_runner:NanLoss", tiny=True)
    (folder,) = (results_root / "runs").iterdir()
    record = results.RunStore(folder).read_record()
    assert record["status"] == "failed" and "loss is nan" in record["error"]


def test_incompatible_strategy_is_refused_before_anything_is_written(results_root):
    with pytest.raises(ConfigError, match="supports settings seg, and the scenario is 'cil'"):
        run(results_root, "test_runner:SegOnly", tiny=True)
    with pytest.raises(ConfigError, match="needs a model with teleport"):
        run(results_root, "test_runner:NeedsBlocksAndSomethingElse", tiny=True)
    assert not results_root.exists()


def test_strategy_stats_and_checkpoint_recorded(results_root):
    record, _ = run(results_root, tiny=True, train__keep_checkpoints="all")
    assert [s["task"] for s in record["strategy_stats"]] == [0, 1]
    folder = results_root / "runs" / record["run_id"] / "checkpoints"
    assert sorted(p.name for p in folder.iterdir()) == ["task-000.pt", "task-001.pt"]
