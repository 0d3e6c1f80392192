"""The lora and olora baselines end to end on digits-tiny (--tiny), and their defining behaviour."""

from __future__ import annotations

import io
import json

import pytest
import torch
from conftest import eval_rows, resume_from_first_checkpoint

from cl_suite import config, runner


def _run(root, strategy, overrides):
    cfg = config.resolve({"scenario": {"name": "digits-tiny", "backbone": "scratch"}, "strategy": strategy, "tiny": True},
                         {"train.max_steps": "4", "train.keep_checkpoints": "all", **overrides})  # fmt: skip
    return runner.start(cfg, root, out=io.StringIO(), progress=False)


@pytest.mark.parametrize(("strategy", "overrides"), [
    ("lora", {}), ("lora", {"strategy.per_task": "true", "strategy.merge": "true"}), ("olora", {}),
])  # fmt: skip
def test_runs_and_resumes_on_digits_tiny(tmp_path, strategy, overrides):
    store = _run(tmp_path, strategy, overrides)
    record = json.loads((store.path / "run.json").read_text())
    assert record["status"] == "success"
    stats = record["strategy_stats"][-1]
    assert stats["adapted_layers"] == 4  # q and v of two blocks
    if strategy == "olora":
        assert stats["groups_per_layer"] == 2  # one LoRA per task, the first frozen
        assert record["cost"]["added_inference_params"] == 2 * 4 * 8 * (32 + 32)
    if overrides.get("strategy.merge") == "true":
        assert stats["groups_per_layer"] == 0 and stats["merged_per_layer"] == 2
        assert record["cost"]["added_inference_params"] == 0
    if overrides.get("strategy.merge") != "true":
        return  # the conformance test resumes the default configurations
    # resume from the first task's checkpoint reaches the same numbers (the bank is rebuilt before loading)
    copy = resume_from_first_checkpoint(store.path)
    assert eval_rows(copy) == eval_rows(store.path)


def _olora_with_two_tasks():
    from cl_suite.models.classifier import ClassifierModel
    from cl_suite.models.tiny_vit import TinyViT
    from strategies.olora import OLoRA

    torch.manual_seed(0)
    model = ClassifierModel(TinyViT(8, 2, dim=16, depth=1, heads=2), 16, [(0, 1), (2, 3)], 4, "tiny")
    strategy = OLoRA()

    class Ctx:
        kernel_backend = "torch"

    strategy.setup(model, Ctx())
    strategy.after_task(None)
    strategy._grow()
    return strategy


def test_olora_orthogonality_term():
    s = _olora_with_two_tasks()
    want = sum((layer.groups[0].A.t() @ layer.groups[1].A).abs().sum() for layer in s.layers.values())
    torch.testing.assert_close(s.orthogonality(), want)
    assert all(layer.groups[0].frozen and not layer.groups[1].frozen for layer in s.layers.values())
    s.orthogonality().backward()
    layer = next(iter(s.layers.values()))
    assert layer.groups[1].A.grad is not None and layer.groups[0].A.grad is None
