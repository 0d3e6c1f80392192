"""MoRA: the layer's formula by hand, the top-k budget in training, inference-only pruning, frozen atoms, one op call,
family defaults, the LLM scale option, and end-to-end runs (with resume) on digits-tiny."""

from __future__ import annotations

import io
import json
import math
from types import SimpleNamespace

import pytest
import torch
from conftest import eval_rows, resume_from_first_checkpoint
from torch import nn

import cl_suite.adapters.linear as adapter_linear_module
from cl_suite import config, runner
from cl_suite.adapters import AdapterLinear
from cl_suite.config import TrainConfig
from strategies.mora import MoRA, MoRAConfig, layer_kwargs, resolve_defaults


def _layer(d_in=16, d_out=8, groups=3, rank=4, topk=5, temperature=1.0, threshold=0.2, seed=0) -> AdapterLinear:
    torch.manual_seed(seed)
    hp = resolve_defaults(MoRAConfig(rank=rank, topk=topk, temperature=temperature, threshold=threshold), "cil")
    layer = AdapterLinear(nn.Linear(d_in, d_out), **layer_kwargs(hp))
    for _ in range(groups):
        layer.add_group(rank)
        with torch.no_grad():
            layer.groups[-1].B.normal_()  # trained-looking atoms (a fresh B is zero)
    return layer


def test_a_tokens_output_equals_the_formula_by_hand():
    base = nn.Linear(3, 2)
    with torch.no_grad():
        base.weight.copy_(torch.tensor([[1.0, 0.0, -1.0], [0.5, 2.0, 0.0]]))
        base.bias.copy_(torch.tensor([0.1, -0.2]))
    layer = AdapterLinear(base, gate="topk", topk=2, temperature=0.5, threshold=0.6)
    layer.add_group(2, alpha=2.0)  # scale 1
    layer.add_group(2, alpha=4.0)  # scale 2
    A = [[1.0, 0.0, 0.5], [0.0, 1.0, 0.0], [-1.0, 1.0, 1.0], [0.2, 0.0, 0.0]]  # atom i reads x with A[i]
    B = [[1.0, 2.0], [0.0, -1.0], [3.0, 1.0], [1.0, 1.0]]  # atom i writes B[i]
    with torch.no_grad():
        for g, rows in enumerate((slice(0, 2), slice(2, 4))):
            layer.groups[g].A.copy_(torch.tensor(A[rows]).t())
            layer.groups[g].B.copy_(torch.tensor(B[rows]))
    x = [1.0, 2.0, 0.5]
    scale = [1.0, 1.0, 2.0, 2.0]

    def by_hand(prune: bool) -> list[float]:
        z = [sum(a * xi for a, xi in zip(row, x)) for row in A]  # 1.25, 2.0, 1.5, 0.2
        norm = math.sqrt(sum(v * v for v in z))
        s = [v / norm for v in z]
        top = sorted(range(4), key=lambda i: -s[i])[:2]  # atoms 1 (s=0.71) and 2 (s=0.54)
        e = {i: math.exp(s[i] / 0.5) for i in top}
        w = [e[i] / sum(e.values()) if i in top else 0.0 for i in range(4)]
        if prune:
            w = [wi if s[i] >= 0.6 else 0.0 for i, wi in enumerate(w)]
        W, b = base.weight.tolist(), base.bias.tolist()
        base_out = [sum(wr * xi for wr, xi in zip(W[o], x)) + b[o] for o in range(2)]
        return [base_out[o] + sum(scale[i] * w[i] * z[i] * B[i][o] for i in range(4)) for o in range(2)]

    xt = torch.tensor([x])
    layer.train()
    torch.testing.assert_close(layer(xt)[0], torch.tensor(by_hand(False)))
    layer.eval()
    torch.testing.assert_close(layer(xt)[0], torch.tensor(by_hand(True)))
    assert abs(by_hand(True)[0] - by_hand(False)[0]) > 0.1, "δ = 0.6 prunes atom 2 at inference"
    layer.threshold = 0.9  # above every s: at inference only the frozen linear remains
    torch.testing.assert_close(layer(xt)[0], base(xt)[0])


def test_exactly_k_atoms_are_active_per_token_in_training():
    layer = _layer(topk=5).train()
    x = torch.randn(4, 7, 16)
    gate = layer.gate_weights(x)
    assert gate.shape == (4, 7, 12)
    assert ((gate != 0).sum(-1) == 5).all()
    s = torch.nn.functional.normalize(x @ torch.cat([g.A for g in layer.groups], 1), dim=-1)
    chosen = torch.zeros_like(s, dtype=torch.bool).scatter(-1, s.topk(5, dim=-1).indices, True)
    assert torch.equal(gate != 0, chosen), "the active atoms are the top-k of s over the whole bank"
    layer.topk = 1  # the budget is max(topk, 2)
    assert ((layer.gate_weights(x) != 0).sum(-1) == 2).all()


def test_pruning_happens_only_at_inference():
    layer = _layer(topk=8, threshold=0.3)
    x = torch.randn(64, 16)
    s = torch.nn.functional.normalize(x @ torch.cat([g.A for g in layer.groups], 1), dim=-1)
    train_gate = layer.train().gate_weights(x)
    eval_gate = layer.eval().gate_weights(x)
    assert ((train_gate != 0).sum(-1) == 8).all(), "no pruning in training, whatever δ"
    torch.testing.assert_close(eval_gate, train_gate * (s >= 0.3), rtol=0, atol=0)  # masked, not renormalised
    assert ((eval_gate != 0).sum(-1) < 8).any()


def test_one_fused_op_call_per_forward_whatever_the_bank(monkeypatch):
    calls = []
    real = adapter_linear_module.adapter_linear
    monkeypatch.setattr(adapter_linear_module, "adapter_linear", lambda *a, **k: calls.append(1) or real(*a, **k))
    for groups in (1, 5):
        calls.clear()
        _layer(groups=groups)(torch.randn(2, 3, 16))
        assert len(calls) == 1


def test_adapter_linear_exposes_its_base_weight_like_nn_linear():
    layer = _layer()
    assert layer.weight is layer.base.weight and layer.bias is layer.base.bias  # open_clip reads c_fc.weight.dtype


def test_family_defaults_and_overrides():
    clip = resolve_defaults(MoRAConfig(), "til")
    knobs = lambda hp: (hp.family, hp.rank, hp.topk, hp.temperature, hp.threshold, hp.scale)  # noqa: E731
    assert knobs(clip) == ("clip", 16, 16, 0.01, 0.2, 1.0)
    assert clip.targets == ("q", "k", "v", "o", "fc1", "fc2") and clip.increment == "before_task"
    llm = resolve_defaults(MoRAConfig(), "instr")
    assert knobs(llm) == ("llm", 8, 8, 0.03, 0.2, 2.0)
    assert llm.targets == ("q", "k", "v", "o") and llm.increment == "after_task"
    mixed = resolve_defaults(MoRAConfig(family="llm", rank=4, targets=("v",), increment="before_task"), "cil")
    assert (mixed.rank, mixed.topk, mixed.targets, mixed.increment) == (4, 8, ("v",), "before_task")
    with pytest.raises(ValueError, match="temperature"):
        resolve_defaults(MoRAConfig(temperature=0.0), "cil")
    with pytest.raises(ValueError, match="threshold"):
        resolve_defaults(MoRAConfig(threshold=1.5), "cil")


def _strategy(**cfg) -> MoRA:
    from cl_suite.models.classifier import ClassifierModel
    from cl_suite.models.tiny_vit import TinyViT

    torch.manual_seed(0)
    model = ClassifierModel(TinyViT(8, 2, dim=16, depth=1, heads=2), 16, [(0, 1), (2, 3)], 4, "tiny")
    strategy = MoRA(MoRAConfig(**cfg))
    ctx = SimpleNamespace(kernel_backend="torch", setting="cil", train=TrainConfig(lr=5e-4))
    strategy.setup(model, ctx)
    return strategy


@pytest.mark.parametrize(("bank_scale", "frozen_scale"), [("kept", 2.0), ("official", 1.0)])
def test_llm_scale_discrepancy_is_an_option(bank_scale, frozen_scale):
    s = _strategy(family="llm", bank_scale=bank_scale, targets=("q", "v"))
    layer = next(iter(s.layers.values()))
    assert float(layer.groups[0].scale) == 2.0  # alpha / r = 2 while training
    s.after_task(None)  # llm timing: freeze, then the next task's atoms join at once
    assert [float(g.scale) for g in layer.groups] == [frozen_scale, 2.0]
    assert [g.frozen for g in layer.groups] == [True, False]
    s.before_task(SimpleNamespace(index=1))
    assert len(layer.groups) == 2, "before_task adds nothing when the fresh atoms already joined"


def test_clip_timing_adds_atoms_when_the_next_task_starts():
    s = _strategy(family="clip", rank=2, topk=2, targets=("q",))
    layer = next(iter(s.layers.values()))
    s.after_task(None)
    assert [g.frozen for g in layer.groups] == [True], "evaluation sees only the trained atoms"
    s.before_task(SimpleNamespace(index=1))
    assert [g.frozen for g in layer.groups] == [True, False]
    assert {id(p) for p in s.trainable_parameters()} >= {id(layer.groups[1].A), id(layer.groups[1].B)}
    assert id(layer.groups[0].A) not in {id(p) for p in s.trainable_parameters()}


def test_active_atoms_are_counted_only_at_inference():
    s = _strategy(rank=4, topk=3, temperature=1.0, threshold=0.0, targets=("q",), stats_tokens=10)
    x = torch.randn(4, 1, 8, 8)
    s.model.train()
    s.model.backbone(x)
    assert s.strategy_stats()["active_atoms_per_token"] is None
    s.model.eval()
    s.model.backbone(x)
    stats = s.strategy_stats()
    assert stats["active_atoms_per_token"] == 3.0 and stats["atoms_per_layer"] == 4
    assert all(c[0] == 10 for c in s._counts.values()), "counting stops at stats_tokens"


def _run(root, overrides):
    cfg = config.resolve({"scenario": "digits-tiny", "strategy": "mora", "tiny": True},
                         {"train.max_steps": "4", "train.keep_checkpoints": "all", **overrides})  # fmt: skip
    return runner.start(cfg, root, out=io.StringIO(), progress=False)


def test_digits_tiny_old_atoms_stay_bit_identical_and_resume_matches(tmp_path):
    store = _run(tmp_path, {"strategy.rank": "4", "strategy.topk": "4"})
    record = json.loads((store.path / "run.json").read_text())
    assert record["status"] == "success"
    first, last = record["strategy_stats"]
    assert (first["atoms_per_layer"], last["atoms_per_layer"], last["frozen_atoms_per_layer"]) == (4, 8, 8)
    assert 0 < last["active_atoms_per_token"] <= 4
    assert record["cost"]["added_inference_params"] == last["added_inference_params"] > 0

    load = lambda i: torch.load(store.path / "checkpoints" / f"task-00{i}.pt", weights_only=False)["strategy"]  # noqa: E731
    after0, after1 = load(0), load(1)
    old = [k for k in after0 if ".groups.0." in k]
    assert old and all(torch.equal(after0[k], after1[k]) for k in old), "frozen atoms changed"
    new_b = [k for k in after1 if ".groups.1.B" in k]
    assert new_b and all(after1[k].abs().sum() > 0 for k in new_b), "the second task's atoms did not train"
    assert any(not torch.equal(after0[k.replace(".1.", ".0.")], torch.zeros_like(after0[k.replace(".1.", ".0.")]))
               for k in new_b), "the first task's atoms did not train"  # fmt: skip

    copy = resume_from_first_checkpoint(store.path)
    assert eval_rows(copy) == eval_rows(store.path)


def test_bench_mora_reports_the_layer_against_the_frozen_linear(capsys):
    from cl_suite import cli
    from cl_suite.adapters import bench_mora

    layer = bench_mora.mora_layer(12, 3, 2, 2, 0.5, 0.2, "cpu", torch.float32)
    x = torch.randn(5, 12)
    for mode in (True, False):
        layer.train(mode)
        torch.testing.assert_close(bench_mora._loop(layer, x), layer(x))  # the baseline computes the same output
    assert [g.frozen for g in layer.groups] == [True, True, False]

    assert cli.main(["bench", "mora", "--d", "16", "--tokens", "8", "--rank", "2", "--topk", "2", "--tasks", "1,3",
                     "--reps", "1"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "MoRA/linear" in out and "loop/MoRA" in out
    rows = [line.split() for line in out.splitlines() if line.startswith(("infer", "train"))]
    assert [(r[0], int(r[2]), int(r[3]), int(r[5])) for r in rows] == [
        ("infer", 1, 2, 64), ("train", 1, 2, 64), ("infer", 3, 6, 192), ("train", 3, 6, 192)]  # fmt: skip
    assert cli.main(["bench", "mora", "--tasks", "1,x"]) == 2
