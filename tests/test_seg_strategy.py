"""loco-lora on the segmentation model: what trains, what stays frozen, old organs predicted unchanged; CLI runs."""

from __future__ import annotations

import io
import json
from types import SimpleNamespace

import pytest
import torch

from cl_suite import config, results, runner
from cl_suite.adapters import AdapterLinear
from cl_suite.api import Task
from cl_suite.models.segmentation import SegmentationModel, SegTransformer
from strategies.loco_lora import LoCoLoRA, LoCoLoRAConfig


def _setup():
    torch.manual_seed(0)
    net = SegTransformer(image_size=16, patch=4, dims=(8, 16), depths=(1, 1), decoder_depth=1, heads=2, out_channels=4)
    model = SegmentationModel(net, [[1, 2], [3]], num_organs=3, backbone_name="test")
    strategy = LoCoLoRA(LoCoLoRAConfig(rank=2))
    strategy.setup(model, SimpleNamespace(kernel_backend="torch"))
    tasks = [Task(0, "t0", [], [], (1, 2), {"organs": ["a", "b"]}), Task(1, "t1", [], [], (3,), {"organs": ["c"]})]
    g = torch.Generator().manual_seed(1)
    batch = {"x": torch.rand(4, 1, 16, 16, generator=g), "y": torch.randint(0, 4, (4, 16, 16), generator=g)}
    return strategy, model, tasks, batch


def _train(strategy, task, batch, steps=3):
    params = list(strategy.trainable_parameters())
    opt = torch.optim.SGD(params, lr=0.5)
    for _ in range(steps):
        loss = strategy.training_step(batch, task)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return params


def test_base_task_trains_everything_then_only_lora_and_the_new_head():
    strategy, model, tasks, batch = _setup()
    model.on_task_start(tasks[0])
    strategy.before_task(tasks[0])
    assert all(p.requires_grad for p in model.parameters())
    _train(strategy, tasks[0], batch)
    strategy.eval()
    with torch.no_grad():
        old = strategy.predict(batch, None)

    model.on_task_start(tasks[1])
    strategy.before_task(tasks[1])
    adapted = [model.get_submodule(n) for n in strategy.layer_names]
    roles = {t.role for t in model.linear_targets()}
    assert adapted and all(isinstance(layer, AdapterLinear) for layer in adapted)
    assert {"q", "v", "fc1", "fc2", "patch"} <= roles and "k" not in {n.rsplit(".", 1)[-1] for n in strategy.layer_names}
    trainable = {id(p) for p in strategy.trainable_parameters()}
    expected = {id(p) for layer in adapted for p in layer.groups[0].parameters()} | {id(p) for p in model.heads[1].parameters()}
    assert trainable == expected
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    _train(strategy, tasks[1], batch)
    assert all(torch.equal(frozen[n], p) for n, p in model.named_parameters() if n in frozen)
    assert any(layer.groups[0].B.abs().sum() > 0 for layer in adapted)  # the new LoRA did learn

    strategy.eval()
    with torch.no_grad():
        new = strategy.predict(batch, None)
        with strategy.branch(0):
            base_branch = model.task_logits(batch, 0)
    torch.testing.assert_close(new[:, 1:3], old[:, 1:3])  # old organs: exactly as right after the base task
    torch.testing.assert_close(base_branch.log_softmax(1)[:, 1:], old[:, 1:3])
    assert strategy.added_inference_parameters() > 0 and strategy.strategy_stats()["lora_tasks"] == 1
    assert len(adapted[0].groups) == 1  # the branch context restored the bank


def test_state_dict_round_trip_rebuilds_the_adapters():
    strategy, model, tasks, batch = _setup()
    for task in tasks:
        model.on_task_start(task)
        strategy.before_task(task)
        _train(strategy, task, batch, steps=1)
    strategy.eval()
    with torch.no_grad():
        expected = strategy.predict(batch, None)
    state = strategy.state_dict()

    fresh, fresh_model, _, _ = _setup()
    for task in tasks:
        fresh_model.on_task_start(task)
    fresh.load_state_dict(state)
    fresh.eval()
    with torch.no_grad():
        torch.testing.assert_close(fresh.predict(batch, None), expected)


def _run(strategy, tmp_path, **overrides):
    sets = {"train.max_steps": "3", **overrides}
    cfg = config.resolve({"scenario": "organ-tiny", "strategy": strategy, "tiny": True}, sets)
    store = runner.start(cfg, tmp_path, out=io.StringIO(), progress=False)
    return results.load_run(store.path)


@pytest.mark.slow  # two end-to-end runs; the conformance test already runs both pairs in the fast suite
def test_cli_runs_record_dice_per_organ(tmp_path):
    for strategy in ("finetune", "loco-lora"):
        record, evals = _run(strategy, tmp_path / strategy)
        assert record["status"] == "success" and record["metric"] == "dice"
        assert list(record["summary"]) == ["seg_all", "seg_old", "seg_new", "forgetting", "bwt", "last"]
        metrics = {e["metric"] for e in evals}
        assert {"dice", "dice/liver", "dice/aorta", "dice/vertebra"} <= metrics
        counts = {e["eval_task"]: e["n"] for e in evals if e["metric"] == "dice"}
        assert counts == {0: 4, 1: 3}  # n = organs per task, for the organ-weighted summaries
        json.dumps(record)
