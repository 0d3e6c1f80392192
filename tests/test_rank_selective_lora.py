"""rank-selective-lora (CoDyRA): the official proximal step and κ schedule (§9.3), the merge at task end, zero added
inference parameters, and an end-to-end run that resumes to the same numbers."""

from __future__ import annotations

import io
import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import eval_rows, resume_from_first_checkpoint

from cl_suite import config, runner
from strategies import rank_selective_lora as rsl

KAPPA = 0.25  # a power of two, so the edge values below are exact in float32


def test_official_proximal_step_edge_values():
    w = torch.tensor([0.0, 0.125, KAPPA, 0.375, 2 * KAPPA, 0.75, 1.0])  # 0, <κ, =κ, κ<|w|<2κ, =2κ, >2κ
    want = torch.tensor([0.0, 0.0, KAPPA, 0.0, KAPPA, 0.5, 0.75])
    torch.testing.assert_close(rsl.proximal_official(w.clone(), KAPPA), want, rtol=0, atol=0)
    torch.testing.assert_close(rsl.proximal_official(-w, KAPPA), -want, rtol=0, atol=0)  # symmetric


def test_soft_threshold_is_the_textbook_operator():
    w = torch.tensor([0.0, 0.125, KAPPA, 0.375, 2 * KAPPA, 0.75, -0.375, -1.0])
    want = torch.tensor([0.0, 0.0, 0.0, 0.125, KAPPA, 0.5, -0.125, -0.75])
    torch.testing.assert_close(rsl.soft_threshold(w, KAPPA), want, rtol=0, atol=0)


def test_proximal_with_zero_kappa_changes_nothing():
    w = torch.randn(16, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(rsl.proximal_official(w.clone(), 0.0), w, rtol=0, atol=0)


def _official_loop(iterations, max_kappa, dense_fraction, lambda_num):
    """The official training loop's κ bookkeeping, written out iteration by iteration: (κ, prunes) per iteration."""
    lambdas = np.linspace(0, max_kappa, lambda_num)
    threshold_id, threshold = 0, lambdas[0]
    dense = dense_fraction * iterations
    step = int((iterations - dense) // lambda_num)
    out = []
    for it in range(iterations):
        if step > 0 and it >= dense and it % step == 0:
            threshold_id += 1
            threshold = lambdas[min(len(lambdas) - 1, threshold_id)]
        out.append((float(threshold), it > dense))
    return out


@pytest.mark.parametrize(("iterations", "dense_fraction", "lambda_num"),
                         [(500, 0.5, 50), (7, 0.5, 2), (101, 0.3, 7), (60, 0.5, 50), (10, 0.0, 3), (9, 1.0, 2)])  # fmt: skip
def test_kappa_schedule_matches_the_official_loop(iterations, dense_fraction, lambda_num):
    s = rsl.KappaSchedule(iterations, 0.005, dense_fraction, lambda_num)
    got = [(s.kappa(i), s.prunes(i)) for i in range(iterations)]
    assert got == _official_loop(iterations, 0.005, dense_fraction, lambda_num)


def test_kappa_schedule_edges_with_the_official_defaults():
    s = rsl.KappaSchedule(500)  # κ_max 0.005, dense 0.5, 50 steps
    assert s.dense == 250 and s.step == 5
    assert s.kappa(249) == 0.0 and s.kappa(250) == pytest.approx(0.005 / 49)  # first nonzero κ at the dense count
    assert not s.prunes(250) and s.prunes(251)  # pruning starts one iteration later (strict >)
    assert s.kappa(489) < 0.005 and s.kappa(490) == 0.005 and s.kappa(499) == 0.005  # maximum at iteration 490
    few = rsl.KappaSchedule(60)  # (60 - 30) // 50 == 0: κ never moves
    assert few.step == 0 and {few.kappa(i) for i in range(60)} == {0.0}


def _strategy(**config):
    from cl_suite.models.classifier import ClassifierModel
    from cl_suite.models.tiny_vit import TinyViT

    torch.manual_seed(0)
    model = ClassifierModel(TinyViT(8, 2, dim=16, depth=1, heads=2), 16, [(0, 1), (2, 3)], 4, "tiny").double()
    strategy = rsl.RankSelectiveLoRA(rsl.RankSelectiveLoRAConfig(rank=4, **config))
    strategy.setup(model, SimpleNamespace(kernel_backend="torch", train=SimpleNamespace(max_steps=10)))
    return strategy


def _task(index=0):
    return SimpleNamespace(index=index, name=f"t{index}", train=list(range(8)))


def test_merge_keeps_the_output_drops_zero_ranks_and_adds_no_parameters():
    s = _strategy()
    task = _task()
    s.before_task(task)
    gen = torch.Generator().manual_seed(1)
    for layer in s.layers.values():
        group = layer.groups[0]
        group.B.data = torch.randn(group.B.shape, generator=gen, dtype=torch.float64)
        group.importance.data[:2] = 0.0  # two ranks pruned in every layer
    assert s.added_inference_parameters() > 0
    x = {"x": torch.randn(5, 1, 8, 8, generator=gen, dtype=torch.float64)}
    s.eval()
    before = s.model.features(x)
    bases = {name: layer.base.weight.clone() for name, layer in s.layers.items()}
    s.after_task(task)
    torch.testing.assert_close(s.model.features(x), before, rtol=1e-10, atol=1e-10)
    assert all(not layer.groups and layer.merged_groups == 1 for layer in s.layers.values())
    assert all(not torch.equal(layer.base.weight, bases[n]) for n, layer in s.layers.items())
    assert s.added_inference_parameters() == 0
    stats = s.strategy_stats()
    assert stats["effective_rank"] == dict.fromkeys(s.layers, 2) and stats["added_inference_params"] == 0
    json.dumps(stats)
    s.before_task(_task(1))  # re-initialised at full rank: A random, B zero, a fresh N(0, 1) importance
    group = next(iter(s.layers.values())).groups[0]
    assert group.rank == 4 and not group.B.any() and group.importance.requires_grad


def test_all_zero_importance_merges_nothing():
    s = _strategy()
    s.before_task(_task())
    for layer in s.layers.values():
        layer.groups[0].B.data.normal_()
        layer.groups[0].importance.data.zero_()
    bases = {name: layer.base.weight.clone() for name, layer in s.layers.items()}
    s.after_task(_task())
    assert all(torch.equal(layer.base.weight, bases[n]) for n, layer in s.layers.items())
    assert s.strategy_stats()["mean_effective_rank"] == 0 and s.added_inference_parameters() == 0


def test_after_step_applies_the_schedule():
    s = _strategy(iterations=4, dense_fraction=0.5, lambda_num=2, max_kappa=KAPPA)  # κ = 0.25 from iteration 2
    s.before_task(_task())
    layer = next(iter(s.layers.values()))
    w = torch.tensor([0.0, 0.375, 0.5, -1.0], dtype=torch.float64)
    layer.groups[0].importance.data.copy_(w)
    for _ in range(3):  # iterations 0-2: no proximal step (2 is the dense count itself, and the prune test is >)
        s.after_step()
    torch.testing.assert_close(layer.groups[0].importance.data, w, rtol=0, atol=0)
    s.after_step()  # iteration 3
    want = torch.tensor([0.0, 0.0, KAPPA, -0.75], dtype=torch.float64)
    torch.testing.assert_close(layer.groups[0].importance.data, want, rtol=0, atol=0)
    assert s.strategy_stats()["final_kappa"] == KAPPA


def test_bad_config_is_one_clear_error():
    with pytest.raises(ValueError, match=r"strategy\.prox"):
        _strategy(prox="hard")
    with pytest.raises(ValueError, match="dense_fraction"):
        _strategy(dense_fraction=1.5)


def test_runs_and_resumes_on_digits_tiny(tmp_path):
    cfg = config.resolve({"scenario": {"name": "digits-tiny", "backbone": "scratch"}, "strategy": "rank-selective-lora",
                          "tiny": True},
                         {"train.max_steps": "6", "train.keep_checkpoints": "all", "strategy.max_kappa": "0.5",
                          "strategy.lambda_num": "3"})  # fmt: skip
    store = runner.start(cfg, tmp_path, out=io.StringIO(), progress=False)
    record = json.loads((store.path / "run.json").read_text())
    assert record["status"] == "success" and record["cost"]["added_inference_params"] == 0
    assert record["config"]["train"]["lr"] == 5e-4 and record["config"]["train"]["scheduler"] == "cosine"
    stats = record["strategy_stats"]
    assert [s["task"] for s in stats] == [0, 1] and stats[-1]["iterations"] == 6
    assert len(stats[0]["effective_rank"]) == stats[0]["adapted_layers"] == 12  # q,k,v,o,fc1,fc2 of two blocks
    assert all(0 <= r <= 16 for s in stats for r in s["effective_rank"].values())
    assert stats[0]["mean_effective_rank"] < 16  # κ = 0.25 on N(0, 1) gates prunes some ranks
    copy = resume_from_first_checkpoint(store.path)
    assert eval_rows(copy) == eval_rows(store.path)
    resumed = json.loads((copy / "run.json").read_text())["strategy_stats"]
    assert resumed == stats


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fresh_group_starts_from_the_official_init_for_a_seed(dtype):
    """Issue #19: CoDyRA's ``codyra_Linear.increment_task`` (Artificer-AI-Lab/CoDyRA loralib/codyra.py @ c1691e4)
    makes the new factors as ``lora_A = weight.new_zeros((r, in))`` and ``gate = torch.randn(1, r)``, then runs
    ``nn.init.kaiming_uniform_(lora_A, a=math.sqrt(5))``: the gate's draw comes first, in the default dtype, and A is
    drawn in the layer's dtype. The expected tensors below replay that sequence of draws."""
    import math

    from torch import nn

    from cl_suite.adapters.linear import AdapterLinear

    rank, d_in, d_out = 4, 6, 5
    layer = AdapterLinear(nn.Linear(d_in, d_out).to(dtype), gate="importance")
    torch.manual_seed(123)
    layer.add_group(rank)
    torch.manual_seed(123)
    gate = torch.randn(1, rank)  # the official draw order: the gate first ...
    lora_a = torch.zeros(rank, d_in, dtype=dtype)
    nn.init.kaiming_uniform_(lora_a, a=math.sqrt(5))  # ... then A, in the layer's dtype
    group = layer.groups[0]
    assert group.A.dtype == group.importance.dtype == dtype
    assert torch.equal(group.importance, gate[0].to(dtype))
    assert torch.equal(group.A, lora_a.T)  # ours stores A as (in × rank)
    assert torch.equal(group.B, torch.zeros(rank, d_out, dtype=dtype))
