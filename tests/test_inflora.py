"""inflora: DualGPM against the official code's numbers, the new down-projection's orthogonality to the stored
subspace, only B training, and no interference with earlier tasks in the paper's ideal case."""

from __future__ import annotations

import math

import pytest
import torch
from toy_mlp import ToyMLP, context, make_task, train_steps

from strategies.dualgpm import DualGPM, threshold
from strategies.inflora import InfLoRA, InfLoRAConfig


def _activations(seed: int, d: int, dims: list[int], n: int = 64) -> torch.Tensor:
    """E[x xᵀ] of n samples in the span of ``dims`` columns of a seeded orthogonal basis (variances 9 … 1), plus noise."""
    g = torch.Generator().manual_seed(seed)
    basis = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))[0][:, dims]
    scales = torch.linspace(3.0, 1.0, len(dims), dtype=torch.float64)
    x = torch.randn(n, len(dims), generator=g, dtype=torch.float64) * scales @ basis.t()
    x = x + 0.01 * torch.randn(n, d, generator=g, dtype=torch.float64)
    return x.t() @ x / n


# Expected (type, basis columns, trace(M Mᵀ C_t)) after each task, printed by the official ``update_DualGPM``
# (methods/inflora.py of liangyanshuo/InfLoRA at e08b00e, run on these exact inputs with numpy; T = 3, lame = 1).
OFFICIAL = {
    0.9: [("remove", 1, 7.46049402372393), ("remove", 3, 13.448745896745617), ("remove", 4, 4.9299798157902455)],
    0.99: [("remove", 1, 7.46049402372393), ("remove", 4, 14.507925548889741), ("retain", 2, 0.00015907823939676516)],
}


@pytest.mark.parametrize("lamb", sorted(OFFICIAL))
def test_dualgpm_matches_the_official_update(lamb):
    tasks = [_activations(0, 8, [0, 1]), _activations(1, 8, [2, 3, 4]), _activations(2, 8, [5, 6])]
    space = DualGPM()
    for t, cov in enumerate(tasks):
        space.update(cov, threshold(t, len(tasks), lamb, 1.0))
        m = space.basis
        kind, cols, trace = OFFICIAL[lamb][t]
        assert (space.kind, space.size) == (kind, cols)
        assert float(torch.trace(m @ m.t() @ cov)) == pytest.approx(trace, rel=1e-6, abs=1e-9)
        torch.testing.assert_close(m.t() @ m, torch.eye(cols, dtype=m.dtype), atol=1e-10, rtol=0)  # orthonormal


def test_threshold_schedule_is_the_official_formula():
    # (lame - lamb) * cur_task / total_sessions + lamb, ImageNet-R config (lamb 0.98, lame 1.0, 10 sessions)
    assert threshold(0, 10, 0.98, 1.0) == pytest.approx(0.98)
    assert threshold(5, 10, 0.98, 1.0) == pytest.approx(0.99)
    assert threshold(9, 10, 0.98, 1.0) == pytest.approx(0.998)


def test_retain_projection_removes_the_protected_space():
    """A 'retain' basis holds the complement; projecting with it leaves nothing of the protected space."""
    space = DualGPM()
    space.update(_activations(1, 8, [0, 1, 2, 3, 4, 5]), 0.999)  # wide protected space: stored as its complement
    assert space.kind == "retain" and space.protected == 8 - space.size
    cov = _activations(3, 8, list(range(8)))
    p = space.protected_projector()
    torch.testing.assert_close(p @ space.project(cov), torch.zeros_like(cov), atol=1e-10, rtol=0)


def _data(seed: int, n: int, d: int = 16, span: int | None = None, classes=(0, 1)):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, span or d, generator=g, dtype=torch.float64)
    x = z @ torch.randn(span, d, generator=g, dtype=torch.float64) if span else z
    y = torch.tensor([classes[i % len(classes)] for i in range(n)])
    return x, y


def _strategy(rank=3, **kw) -> InfLoRA:
    strategy = InfLoRA(InfLoRAConfig(rank=rank, targets=("fc1", "fc2"), loss="model", **kw))
    strategy.setup(ToyMLP(), context(num_tasks=2))
    return strategy


def test_new_down_projection_is_orthogonal_to_the_stored_subspace_and_only_b_trains():
    strategy = _strategy(rank=3, lamb=0.95)
    t0, t1 = make_task(0, *_data(0, 48)), make_task(1, *_data(1, 48, classes=(2, 3)))
    strategy.before_task(t0)
    train_steps(strategy, t0, 10)
    strategy.after_task(t0)
    assert all(space.protected > 0 for space in strategy.spaces.values())
    strategy.before_task(t1)
    for name, layer in strategy.layers.items():
        a = layer.groups[-1].A
        assert not a.requires_grad and layer.groups[-1].B.requires_grad  # official: only lora_B trains
        torch.testing.assert_close(a.t() @ a, torch.eye(3, dtype=a.dtype) / 3, atol=1e-10, rtol=0)  # U/√3
        p = strategy.spaces[name].protected_projector()
        assert float((p @ a).norm()) < 1e-8 * float(a.norm())
    assert strategy._deficient == 0


def test_first_task_down_projection_is_the_top_covariance_directions():
    strategy = _strategy(rank=2)
    x, y = _data(0, 40)
    task = make_task(0, x, y)
    strategy.before_task(task)
    cov = x.t() @ x / len(x)  # fc1's input covariance (the official cur_matrix: mean of x xᵀ over samples)
    u = torch.linalg.eigh(cov)[1][:, -2:]
    a = strategy.layers["fc1"].groups[-1].A * math.sqrt(3)
    torch.testing.assert_close(a @ a.t(), u @ u.t(), atol=1e-8, rtol=0)  # same subspace (signs are free)


def test_earlier_tasks_are_untouched_in_the_ideal_case():
    """The paper's ideal case: the stored subspace is exactly the old tasks' input span at every layer. Then A_t x = 0
    for every old input, so training B_t changes nothing on them (layer by layer, so through the whole network).
    Without protection the same training does change them (the control that shows the test can fail)."""
    x_old, y_old = _data(0, 6)  # 6 samples: their inputs span 6 of 16 dimensions at every layer
    t0, t1 = make_task(0, x_old, y_old), make_task(1, *_data(1, 48, classes=(2, 3)))
    shifts = {}
    for protect in (True, False):
        strategy = _strategy(rank=3)
        strategy.before_task(t0)
        train_steps(strategy, t0, 10)
        strategy.after_task(t0)
        if protect:
            covs = strategy.input_covariances(t0)
            for name, cov in covs.items():
                evals, evecs = torch.linalg.eigh(cov)
                strategy.spaces[name] = DualGPM(evecs[:, evals > 1e-9 * evals.max()], "remove")
        else:
            strategy.spaces = {name: DualGPM() for name in strategy.layers}
        before = strategy.model.features({"x": x_old}).detach()
        strategy.before_task(t1)
        losses = train_steps(strategy, t1, 30, lr=5e-2)
        assert losses[-1] < losses[0]  # the new task does learn
        strategy.after_task(t1)
        shifts[protect] = float((strategy.model.features({"x": x_old}) - before).abs().max())
    assert shifts[True] < 1e-10
    assert shifts[False] > 1e-3


def test_later_task_down_projection_is_the_official_projected_svd():
    """Task 1's A on fc1 (whose input is x itself) is the official ``U[:, :r].T / sqrt(3)`` of ``C − M Mᵀ C`` (remove) or
    ``M Mᵀ C`` (retain)."""
    strategy = _strategy(rank=3, lamb=0.95)
    t0 = make_task(0, *_data(0, 48))
    x1, y1 = _data(1, 48, classes=(2, 3))
    strategy.before_task(t0)
    train_steps(strategy, t0, 10)
    strategy.after_task(t0)
    strategy.before_task(make_task(1, x1, y1))
    m, kind = strategy.spaces["fc1"].basis, strategy.spaces["fc1"].kind
    cov = x1.t() @ x1 / len(x1)
    projected = cov - m @ m.t() @ cov if kind == "remove" else m @ m.t() @ cov  # official, per project_type
    u = torch.linalg.svd(projected)[0][:, :3]
    a = strategy.layers["fc1"].groups[-1].A * math.sqrt(3)
    torch.testing.assert_close(a @ a.t(), u @ u.t(), atol=1e-8, rtol=0)
