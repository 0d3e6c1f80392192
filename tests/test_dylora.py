"""dylora: the truncated forward and its scale (official ``dynamic`` module), the frozen-mode gradient, rank r equal
to plain LoRA, every truncation rank a working model after training, and the kept rank merged after the task."""

from __future__ import annotations

import math

import pytest
import torch
from toy_mlp import ToyMLP, context, make_task, train_steps

from cl_suite.adapters import AdapterLinear
from strategies.dylora import DyLoRA, DyLoRAConfig, set_truncation, truncation_gate

R, ALPHA = 6, 12.0


def _layer(seed: int = 0) -> AdapterLinear:
    torch.manual_seed(seed)
    layer = AdapterLinear(torch.nn.Linear(10, 7).double(), backend="torch")
    layer.add_group(R, ALPHA)
    with torch.no_grad():
        layer.groups[0].B.normal_()  # a trained-looking B (LoRA starts it at zero)
    return layer


def _official_forward(layer: AdapterLinear, x: torch.Tensor, b: int, frozen: bool) -> torch.Tensor:
    """The official Linear + ``dynamic`` forward written out: truncate A (r × in) and B (out × r) to b ranks, each
    times √(r / b) (the b−1 leading ranks detached in frozen mode), then x Aᵀ Bᵀ · α / r."""
    g = layer.groups[0]
    a, bm = g.A.t(), g.B.t()  # official layout: lora_A (r, in), lora_B (out, r)

    def nd(w):  # dynamic.forward on columns
        cols = torch.cat([w[:, : b - 1].detach(), w[:, b - 1 : b]], -1) if frozen else w[:, :b]
        return cols * math.sqrt(R / b)

    a_b, b_b = nd(a.t()).t(), nd(bm)
    return layer.base(x) + (x @ a_b.t() @ b_b.t()) * (ALPHA / R)


def test_truncation_gate_is_alpha_over_b_on_the_first_b_ranks():
    gate = truncation_gate(8, 3, 16.0, dtype=torch.float64)
    # official: scaling α / r on the layer, times √(r / b) on each of the truncated A and B
    official = (16.0 / 8) * math.sqrt(8 / 3) ** 2
    torch.testing.assert_close(gate, torch.tensor([official] * 3 + [0.0] * 5, dtype=torch.float64))
    with pytest.raises(ValueError):
        truncation_gate(8, 0, 16.0)


@pytest.mark.parametrize("b", [1, 3, R])
@pytest.mark.parametrize("frozen", [True, False])
def test_forward_and_gradients_match_the_official_dynamic_module(b, frozen):
    x = torch.randn(5, 10, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    ours, ref = _layer(), _layer()
    want = _official_forward(ref, x, b, frozen)
    want.square().sum().backward()
    strategy = DyLoRA(DyLoRAConfig(rank=R, alpha=ALPHA, frozen=frozen))
    strategy.layers, strategy.b = {"l": ours}, b
    set_truncation(ours.groups[0], b, ALPHA)
    got = ours(x)
    got.square().sum().backward()
    strategy.after_backward()  # frozen mode: zero the leading ranks' gradients
    torch.testing.assert_close(got, want, atol=1e-12, rtol=1e-12)
    g, r = ours.groups[0], ref.groups[0]
    torch.testing.assert_close(g.A.grad, r.A.grad, atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(g.B.grad, r.B.grad, atol=1e-12, rtol=1e-12)
    trained = (g.B.grad.abs().sum(1) > 0).nonzero().flatten().tolist()
    assert trained == ([b - 1] if frozen else list(range(b)))


def test_rank_r_is_plain_lora():
    x = torch.randn(5, 10, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    lora, dy = _layer(), _layer()  # same seed: same base, A and B; lora keeps the scalar scale α / r
    set_truncation(dy.groups[0], R, ALPHA)
    y_lora, y_dy = lora(x), dy(x)
    torch.testing.assert_close(y_dy, y_lora, atol=1e-12, rtol=1e-12)
    y_lora.sum().backward()
    y_dy.sum().backward()
    torch.testing.assert_close(dy.groups[0].B.grad, lora.groups[0].B.grad, atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(dy.groups[0].A.grad, lora.groups[0].A.grad, atol=1e-12, rtol=1e-12)


def _task():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 16, generator=g, dtype=torch.float64)
    y = (x[:, 0] > 0).long() + 2 * (x[:, 1] > 0).long()
    return make_task(0, x, y)


@pytest.mark.parametrize("frozen", [True, False])
def test_every_truncation_rank_gives_a_working_model(frozen):
    """Only the adapters train (the toy head is frozen); afterwards each rank 1..r alone lowers the loss below the
    untrained model's, and the losses are finite."""
    torch.manual_seed(0)
    strategy = DyLoRA(DyLoRAConfig(rank=R, alpha=ALPHA, frozen=frozen, targets=("fc1", "fc2"), select_batches=8))
    strategy.setup(ToyMLP(), context())
    task = _task()
    strategy.before_task(task)
    before = strategy.rank_losses(task)
    train_steps(strategy, task, 150, lr=1e-2)
    after = strategy.rank_losses(task)
    assert sorted(after) == list(range(1, R + 1))
    for b in range(1, R + 1):
        assert math.isfinite(after[b]) and after[b] < before[b] - 0.05, (b, before[b], after[b])


@pytest.mark.parametrize("keep", [0, 2])
def test_after_task_merges_the_kept_rank(keep):
    torch.manual_seed(0)
    strategy = DyLoRA(DyLoRAConfig(rank=R, alpha=ALPHA, targets=("fc1", "fc2"), keep_rank=keep))
    strategy.setup(ToyMLP(), context())
    task = _task()
    strategy.before_task(task)
    train_steps(strategy, task, 20)
    losses = strategy.rank_losses(task)
    b = keep or min(losses, key=lambda k: (losses[k], k))
    strategy.truncate(b)
    x = {"x": task.train.x}
    want = strategy.model.features(x).detach()
    strategy.after_task(task)
    assert strategy.strategy_stats()["kept_rank"] == b
    assert all(not layer.groups for layer in strategy.layers.values()) and strategy.added_inference_parameters() == 0
    torch.testing.assert_close(strategy.model.features(x), want, atol=1e-10, rtol=0)
