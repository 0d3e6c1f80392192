"""CoSO: orthogonality of the applied update, the historical basis, the FD sketch and §9.4's rank rule, optimizer
memory, and end-to-end runs with a growing basis that survives --resume."""

from __future__ import annotations

import io
import json
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cl_suite import config, results, runner
from cl_suite.api import LinearTarget, Task, TaskModel
from strategies.coso.optimizer import CoSOAdamW
from strategies.coso.strategy import CoSO, CoSOConfig
from strategies.coso.subspace import HistoricalSubspace, shrink


def _orthonormal(rows: int, cols: int, seed: int, dtype=torch.float64) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.linalg.qr(torch.randn(rows, cols, generator=g, dtype=dtype))[0]


def _relative_overlap(basis: torch.Tensor, update: torch.Tensor) -> float:
    """‖Mᵀ ΔW‖_F / ‖ΔW‖_F: the share of an update inside span(M)."""
    return float((basis.T @ update).norm() / update.norm())


# -- the applied update ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("update_gap", [1, 3])
def test_applied_update_is_orthogonal_to_the_historical_basis(update_gap):
    torch.manual_seed(0)
    layer = nn.Linear(24, 20, bias=False).double()
    sub = HistoricalSubspace(20, sketch_rank=6)
    sub.basis = _orthonormal(20, 7, seed=1)
    opt = CoSOAdamW([{"params": [layer.weight], "subspace": sub, "proj_rank": 4, "update_gap": update_gap}], lr=1e-2)
    free = CoSOAdamW([{"params": [nn.Parameter(layer.weight.detach().clone())]}], lr=1e-2)  # control: plain AdamW
    x, y = torch.randn(64, 24, dtype=torch.float64), torch.randn(64, 20, dtype=torch.float64)
    control = free.param_groups[0]["params"][0]
    for step in range(8):
        before = layer.weight.detach().clone()
        F.mse_loss(layer(x[step::8] * (1 + step)), y[step::8]).backward()
        opt.step()
        opt.zero_grad()
        assert _relative_overlap(sub.basis, layer.weight.detach() - before) < 1e-6
        control_before = control.detach().clone()
        F.mse_loss(x[step::8] * (1 + step) @ control.T, y[step::8]).backward()
        free.step()
        free.zero_grad()
        assert _relative_overlap(sub.basis, control.detach() - control_before) > 0.1  # the test can fail


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_update_stays_orthogonal_when_r1_exceeds_the_free_rank(dtype):
    """With r1 > rank(G'), SVD columns of zero singular value are arbitrary (here: inside M), and in float32 the
    round-off left of M in G' is large enough for Adam to normalise into a full step: neither may leak into M."""
    g = torch.Generator().manual_seed(0)
    weight = nn.Parameter(torch.zeros(8, 10, dtype=dtype))  # from 0, the weight is the sum of the applied updates
    sub = HistoricalSubspace(8, sketch_rank=7, dtype=dtype)
    sub.basis = _orthonormal(8, 6, seed=2).to(dtype)  # only 2 free output directions
    opt = CoSOAdamW([{"params": [weight], "subspace": sub, "proj_rank": 5, "update_gap": 1}], lr=1e-2)
    for _ in range(4):
        x = torch.randn(16, 10, generator=g, dtype=dtype)
        y = torch.randn(16, 8, generator=g, dtype=dtype)
        ((x @ weight.T - y) * 100).square().mean().backward()
        opt.step()
        opt.zero_grad()
    assert _relative_overlap(sub.basis.double(), weight.detach().double()) < 1e-6


# -- optimizer memory ------------------------------------------------------------------------------------------
def test_optimizer_state_per_matrix_is_linear_in_r1():
    out, inp, r1 = 96, 80, 5
    layer = nn.Linear(inp, out, bias=False)
    opt = CoSOAdamW([{"params": [layer.weight], "subspace": HistoricalSubspace(out, 12), "proj_rank": r1,
                      "update_gap": 1}], lr=1e-3)  # fmt: skip
    for _ in range(3):
        layer(torch.randn(32, inp)).square().mean().backward()
        opt.step()
        opt.zero_grad()
    tensors = [v for v in opt.state[layer.weight].values() if torch.is_tensor(v)]
    assert sorted(t.shape for t in tensors) == sorted([(out, r1), (r1, inp), (r1, inp)])
    assert sum(t.numel() for t in tensors) == r1 * (out + 2 * inp) < out * inp


# -- the sketch and the boundary rule (§9.4) -------------------------------------------------------------------
def test_shrink_subtracts_the_next_singular_value():
    u = torch.eye(5)
    basis, sigma = shrink(u, torch.tensor([5.0, 4.0, 3.0, 2.0, 1.0]), rank=2)
    assert basis.shape == (5, 2)
    torch.testing.assert_close(sigma, torch.tensor([4.0, 7.0**0.5]))
    with pytest.raises(ValueError, match="more than 5 singular values"):
        shrink(u, torch.ones(5), rank=5)


def _feed(sub: HistoricalSubspace, grads) -> None:
    for g in grads:
        u, s, _ = torch.linalg.svd(g, full_matrices=False)
        sub.sketch(u, s)


def test_sketch_is_exact_on_a_low_rank_stream_and_a_lower_bound_otherwise():
    g = torch.Generator().manual_seed(0)
    span = _orthonormal(16, 3, seed=3)  # every gradient lives in the same 3 output directions
    grads = [span @ torch.randn(3, 12, generator=g, dtype=torch.float64) for _ in range(5)]
    sub = HistoricalSubspace(16, sketch_rank=4)
    _feed(sub, grads)
    sketch = sub.sketch_u * sub.sketch_sigma
    torch.testing.assert_close(sketch @ sketch.T, sum(x @ x.T for x in grads))  # shrinkage by zero: exact

    full = [torch.randn(16, 12, generator=g, dtype=torch.float64) for _ in range(5)]
    sub = HistoricalSubspace(16, sketch_rank=4)
    _feed(sub, full)
    sketch = sub.sketch_u * sub.sketch_sigma
    gap = sum(x @ x.T for x in full) - sketch @ sketch.T
    assert float(torch.linalg.eigvalsh(gap).min()) > -1e-9  # FD: B Bᵀ ⪯ Σ G Gᵀ
    torch.testing.assert_close(sub.sketch_u.T @ sub.sketch_u, torch.eye(4, dtype=torch.float64))


def test_boundary_rank_counts_cumulative_energy_strictly_below_the_threshold():
    sub = HistoricalSubspace(8, sketch_rank=4, dtype=torch.float64)
    sub.sketch_u = _orthonormal(8, 4, seed=4)
    # equal values: cumsum of the energy fractions is .25 .5 .75 1 exactly (square roots of non-squares are not exact,
    # and a boundary test needs the fractions to hit the threshold exactly)
    sub.sketch_sigma = torch.ones(4, dtype=torch.float64)
    assert sub.boundary_rank(0.75) == 2  # one less than the smallest k reaching ε (3)
    assert sub.boundary_rank(0.9) == 3
    assert sub.boundary_rank(0.98) == 3  # at most r2 - 1
    assert sub.boundary_rank(0.25) == 0  # can be 0
    top = sub.sketch_u[:, :3].clone()
    assert sub.close_task(0.9) == 3
    torch.testing.assert_close(sub.basis, top)
    assert sub.size == 3 and sub.sketch_u is None and sub.boundary_rank(0.9) == 0  # the sketch restarts


def test_sketch_sees_only_every_kth_gradient():
    layer = nn.Linear(12, 10, bias=False).double()
    sub = HistoricalSubspace(10, sketch_rank=3)
    seen = []
    original = sub.sketch
    sub.sketch = lambda u, s: (seen.append(1), original(u, s))
    opt = CoSOAdamW([{"params": [layer.weight], "subspace": sub, "proj_rank": 2, "update_gap": 3}], lr=1e-3)
    for _ in range(7):
        layer(torch.randn(8, 12, dtype=torch.float64)).square().mean().backward()
        opt.step()
        opt.zero_grad()
    assert len(seen) == 3  # steps 0, 3 and 6


# -- the strategy on a toy classifier --------------------------------------------------------------------------
class ToyClassifier(TaskModel):
    """x -> o (role "o") -> tanh -> head over a global label space; float64 so round-off stays far below 1e-6."""

    def __init__(self, dim: int = 16, classes: int = 6) -> None:
        super().__init__()
        self.o, self.head = nn.Linear(dim, dim), nn.Linear(dim, classes)
        self.double()

    def logits(self, batch):
        return self.head(torch.tanh(self.o(batch["x"])))

    def loss(self, batch, task):
        return F.cross_entropy(self.logits(batch), batch["y"])

    def predict(self, batch, task_id):
        return self.logits(batch)

    def head_parameters(self):
        return list(self.head.parameters())

    def linear_targets(self):
        return [LinearTarget("o", "o", self.o)]


class ToyContext:
    train = config.TrainConfig(lr=1e-2)
    kernel_backend = "torch"

    @staticmethod
    def log(**fields):
        pass


def _toy_tasks(n: int = 3) -> list[Task]:
    g = torch.Generator().manual_seed(5)
    tasks = []
    for t in range(n):
        y = torch.tensor([2 * t, 2 * t + 1] * 16)
        x = torch.randn(32, 16, generator=g, dtype=torch.float64) + 2 * F.one_hot(y, 16).double()
        tasks.append(Task(t, f"toy{t}", [{"x": x, "y": y}], [], classes=(2 * t, 2 * t + 1)))
    return tasks


def test_basis_grows_stays_orthonormal_and_later_updates_avoid_it():
    torch.manual_seed(0)
    model, strategy = ToyClassifier(), CoSO(CoSOConfig(proj_rank=4, sketch_rank=8, threshold=0.98))
    strategy.setup(model, ToyContext())
    sizes = []
    for task in _toy_tasks():
        strategy.before_task(task)
        params = list(strategy.trainable_parameters())
        assert params[0] is model.o.weight and all(p is not model.o.bias for p in params)  # the weight only, as the official code
        opt = strategy.configure_optimizer(params)
        basis = strategy.subspaces["o"].basis.clone()
        head_before = model.head.weight.detach().clone()
        for _ in range(6):
            before = model.o.weight.detach().clone()
            loss = strategy.training_step(task.train[0], task)
            opt.zero_grad()
            loss.backward()
            opt.step()
            if basis.shape[1]:
                assert _relative_overlap(basis, model.o.weight.detach() - before) < 1e-6
        others = [c for c in range(6) if c not in task.classes]
        torch.testing.assert_close(model.head.weight[others], head_before[others])  # only the task's head trains
        strategy.after_task(task)
        m = strategy.subspaces["o"].basis
        torch.testing.assert_close(m.T @ m, torch.eye(m.shape[1], dtype=m.dtype), atol=1e-8, rtol=0)
        sizes.append(m.shape[1])
    assert 0 < sizes[0] < sizes[1] < sizes[2] <= 16
    stats = strategy.strategy_stats()
    assert stats["basis_size"] == {"o": sizes[-1]} and json.dumps(stats)


def test_task_head_loss_uses_the_temperature_and_only_the_tasks_classes():
    torch.manual_seed(0)
    model, strategy = ToyClassifier(), CoSO(CoSOConfig(temperature=3.0))
    strategy.setup(model, ToyContext())
    task = _toy_tasks(2)[1]
    batch = dict(task.train[0])
    batch["y"] = batch["y"].clone()
    batch["y"][:4] = 0  # samples of an earlier task's class are dropped
    logits = model.logits(batch)[4:][:, [2, 3]] / 3.0
    expected = F.cross_entropy(logits, batch["y"][4:] - 2)
    torch.testing.assert_close(strategy.training_step(batch, task), expected)


def test_bad_config_is_refused_with_the_accepted_values():
    with pytest.raises(ValueError, match="accepted: cifar, inr, domainnet"):
        CoSO(CoSOConfig(preset="imagenet"))
    strategy = CoSO(CoSOConfig(sketch_rank=16))
    with pytest.raises(ValueError, match=r"below min\(out, in\)=16"):
        strategy.setup(ToyClassifier(), ToyContext())


# -- end to end ------------------------------------------------------------------------------------------------
def test_runs_reports_basis_sizes_and_resumes_with_its_basis(tmp_path):
    cfg = config.resolve({"scenario": {"name": "digits-tiny", "backbone": "scratch"}, "strategy": "coso", "tiny": True},
                         {"train.max_steps": "4", "train.keep_checkpoints": "all",
                          "strategy.threshold": "0.99999"})  # fmt: skip
    store = runner.start(cfg, tmp_path, out=io.StringIO(), progress=False)
    record = json.loads((store.path / "run.json").read_text())
    assert record["status"] == "success"
    stats = record["strategy_stats"]
    names = ["backbone.layers.0.attn.o", "backbone.layers.1.attn.o"]
    assert [sorted(s["basis_size"]) for s in stats] == [names, names]
    first, second = (s["basis_total"] for s in stats)
    assert 0 < first < second  # the basis grows after each task, and the resumed run must rebuild it
    copy = tmp_path / "runs" / "resumed"
    shutil.copytree(store.path, copy)
    (copy / "checkpoints" / "task-001.pt").unlink()
    results.RunStore(copy).update(status="running", run_id="resumed")
    runner.resume(copy, out=io.StringIO(), progress=False)
    resumed = json.loads((copy / "run.json").read_text())
    assert resumed["strategy_stats"] == stats
    evals = lambda p: sorted((e["after_task"], e["eval_task"], e["value"]) for e in results.load_run(p)[1])  # noqa: E731
    np.testing.assert_array_equal(np.array(evals(copy)), np.array(evals(store.path)))


@pytest.mark.slow
def test_forgets_less_than_finetune_on_clip_tiny(tmp_path):
    """The whole 4-domain clip-tiny stream (about 3 minutes on one CPU thread): CoSO's max-based forgetting is
    below fine-tuning's. CoSO trains only the o projections, so it takes a larger learning rate than the
    scenario's default (tuned for full fine-tuning)."""
    from cl_suite.models import tiny_clip

    if not tiny_clip.WEIGHTS.exists():
        pytest.skip("tiny CLIP weights not built (cl-suite pretrain tiny-clip)")
    forgetting = {}
    for strategy, overrides in (("finetune", {}), ("coso", {"train.lr": "4e-3"})):
        cfg = config.resolve({"scenario": "clip-tiny", "strategy": strategy}, overrides)
        store = runner.start(cfg, tmp_path, out=io.StringIO(), progress=False)
        forgetting[strategy] = json.loads((store.path / "run.json").read_text())["summary"]["forgetting"]
    assert forgetting["coso"] < forgetting["finetune"] - 5, forgetting
