"""orthogonal-svd (OSFT): reconstruction, gradient projection, rank rules, the strategy's task boundary, and a
cross-check against HF PEFT's OSF implementation (peft is a test-only dependency, used as the reference)."""

from __future__ import annotations

import copy
import io

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from cl_suite import config, runner
from cl_suite.api import Context, LinearTarget, Task, TaskModel
from strategies.orthogonal_svd.ranks import adaptive_ranks, fixed_ranks, layer_importance, schedule_ranks
from strategies.orthogonal_svd.strategy import OrthogonalSVD, OrthogonalSVDConfig
from strategies.orthogonal_svd.svd_linear import OrthogonalSVDLinear, project_weight_gradient


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).detach().norm() / b.detach().norm())


def _linear(d_in: int, d_out: int, seed: int = 0) -> nn.Linear:
    torch.manual_seed(seed)
    return nn.Linear(d_in, d_out)


# -- the layer -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("d_in", "d_out", "k"), [(16, 16, 5), (16, 24, 6), (24, 16, 0), (12, 20, 12)])
def test_reconstruction_at_task_start_is_exact(d_in, d_out, k):
    base = _linear(d_in, d_out)
    layer = OrthogonalSVDLinear(base, k)
    assert _rel(layer.reconstruct(), base.weight.detach()) < 1e-5
    x = torch.randn(7, d_in)
    torch.testing.assert_close(layer(x), base(x), rtol=1e-5, atol=1e-5)
    assert layer.top_k == k and layer.trainable_rank == min(d_in, d_out) - k
    assert layer.bias is base.bias  # shared, so training it trains the original layer


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_task_starts_from_the_exact_weight_and_sgd_keeps_the_frozen_directions(dtype):
    """Issue #19: W₀ + (P − P₀) is W₀ bit for bit at task start (PEFT OSF's "original weight plus delta"), the SVD
    runs in the weight's dtype, and a projected SGD step moves W only orthogonally to the frozen triplets."""
    base = _linear(24, 32).to(dtype)
    w0 = base.weight.detach().clone()
    layer = OrthogonalSVDLinear(base, 8)
    assert layer.U_low.dtype == dtype and layer.U_high.dtype == dtype
    assert torch.equal(layer.weight, w0) and torch.equal(layer.reconstruct(), w0)
    x = torch.randn(5, 24, dtype=dtype)
    assert torch.equal(layer(x), base(x))
    eps = torch.finfo(dtype).eps
    assert (layer.U_high.T @ layer.U_low).abs().max() < 100 * eps  # the split is orthogonal in the weight's dtype
    assert (layer.V_high @ layer.V_low.T).abs().max() < 100 * eps

    opt = torch.optim.SGD(layer.low_parameters(), lr=0.1)
    _loss(layer.to(dtype), seed=3).backward()
    layer.project_gradients()
    opt.step()
    delta = layer.reconstruct() - w0
    assert delta.norm() > 1e-3 * w0.norm()  # it moved
    scale = 10 * eps * float(w0.norm())
    assert (layer.U_high.T @ delta).abs().max() < scale  # ... only where no frozen left singular vector points
    assert (delta @ layer.V_high.T).abs().max() < scale


def _loss(layer: nn.Module, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    dtype = layer.U_low.dtype if isinstance(layer, OrthogonalSVDLinear) else torch.float32
    x = torch.randn(32, layer.in_features, generator=g, dtype=dtype)
    y = torch.randn(32, layer.out_features, generator=g, dtype=dtype)
    return (layer(x) - y).square().mean()


def test_weight_gradient_is_orthogonal_to_the_frozen_subspace():
    layer = OrthogonalSVDLinear(_linear(16, 24), 6)
    _loss(layer).backward()
    raw = layer.weight_gradient()
    assert (layer.U_high.T @ raw).norm() > 1e-2 * raw.norm()  # without projection the update leaks into U_high
    layer.project_gradients()
    g = layer.weight_gradient()
    assert (layer.U_high.T @ g).norm() < 1e-5 * g.norm()
    assert (g @ layer.V_high.T).norm() < 1e-5 * g.norm()
    # the paper's matrix form removes the high-high block of a dense gradient
    dense = torch.randn(24, 16)
    projected = project_weight_gradient(dense, layer.U_high, layer.V_high)
    assert (layer.U_high.T @ projected @ layer.V_high.T).abs().max() < 1e-5


def _adam_steps(layer: OrthogonalSVDLinear, reproject: bool, steps: int = 20) -> None:
    opt = torch.optim.Adam(layer.low_parameters(), lr=1e-2)
    for i in range(steps):
        opt.zero_grad()
        _loss(layer, seed=i).backward()
        layer.project_gradients()
        opt.step()
        if reproject:
            layer.project_parameters()


def test_frozen_triplets_survive_adam_only_with_reprojection():
    base = _linear(16, 24)
    layer = OrthogonalSVDLinear(base, 6)
    _adam_steps(layer, reproject=True)
    w = layer.reconstruct()
    assert _rel(w, base.weight.detach()) > 1e-2  # it did learn
    high = layer.U_high * layer.S_high  # W v_i = σ_i u_i for every frozen triplet
    assert _rel(w @ layer.V_high.T, high) < 1e-5
    assert _rel(layer.U_high.T @ w, layer.S_high[:, None] * layer.V_high) < 1e-5

    drifting = OrthogonalSVDLinear(base, 6)
    _adam_steps(drifting, reproject=False)
    assert _rel(drifting.reconstruct() @ drifting.V_high.T, high) > 1e-4  # Adam's scaling leaves the complement


# -- rank rules and importance -------------------------------------------------------------------------------
def test_rank_rules():
    shapes = {"a": (64, 32), "b": (32, 32), "c": (100, 20)}
    assert fixed_ranks(shapes) == {"a": 16, "b": 16, "c": 10}
    assert schedule_ranks(shapes, 0) == {"a": 4, "b": 2, "c": 7}  # floor(max · 0.07)
    assert schedule_ranks(shapes, 2) == {"a": 13, "b": 6, "c": 20}  # c capped at full rank
    # importance normalised to mean 1: a -> 0.1 + 1.5·0.7 = 1.15 (clipped to 1), b -> 0.1 + 0.5·0.7 = 0.45,
    # c -> 0.1 + 1.0·0.7 = 0.8
    ranks = adaptive_ranks({"a": 0.6, "b": 0.2, "c": 0.4}, shapes)
    assert ranks == {"a": 32, "b": 14, "c": 16}
    assert adaptive_ranks({"a": -0.6, "b": 1.0, "c": 0.8}, shapes)["a"] == 3  # negative: clipped to mrr (0.1·32)
    assert adaptive_ranks({"a": 0.01, "b": -0.02, "c": 0.0}, shapes) == {"a": 25, "b": 25, "c": 16}  # degenerate: trr


def test_layer_importance_is_the_input_output_cosine():
    same, flip = nn.Linear(8, 8, bias=False), nn.Linear(8, 12, bias=False)
    with torch.no_grad():
        same.weight.copy_(torch.eye(8) * 3)
        flip.weight.copy_(torch.cat([-torch.eye(8), torch.randn(4, 8)]))  # first 8 outputs are -x
    x = torch.randn(5, 3, 8)
    scores = layer_importance({"same": same, "flip": flip}, lambda: [same(x) + flip(x)[..., :8]])
    assert scores["same"] == pytest.approx(1.0, abs=1e-5) and scores["flip"] == pytest.approx(-1.0, abs=1e-5)


# -- the strategy on a toy task model ------------------------------------------------------------------------
class ToyModel(TaskModel):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc1, self.fc2, self.head = nn.Linear(6, 16), nn.Linear(16, 12), nn.Linear(12, 3)

    def forward(self, x):
        return self.head(torch.relu(self.fc2(torch.relu(self.fc1(x)))))

    def loss(self, batch, task):
        return nn.functional.cross_entropy(self(batch[0]), batch[1])

    def predict(self, batch, task_id):
        return self(batch[0])

    def head_parameters(self):
        return list(self.head.parameters())

    def linear_targets(self):
        return [LinearTarget("fc1", "fc1", self.fc1), LinearTarget("fc2", "fc2", self.fc2)]


def _toy_run(cfg: OrthogonalSVDConfig, steps: int = 10):
    g = torch.Generator().manual_seed(0)
    tasks = [Task(i, f"t{i}", TensorDataset(torch.randn(32, 6, generator=g), torch.randint(0, 3, (32,), generator=g)),
                  TensorDataset(torch.randn(8, 6), torch.zeros(8, dtype=torch.long))) for i in range(2)]  # fmt: skip
    model, seen = ToyModel(), []
    ctx = Context(device=torch.device("cpu"), dtype=torch.float32, seed=0, num_tasks=2, setting="cil", train=None,
                  make_loader=lambda ds, shuffle=False, batch_size=None: DataLoader(ds, batch_size=batch_size or 8),
                  tasks_seen=lambda: seen)  # fmt: skip
    strategy = OrthogonalSVD(cfg)
    strategy.setup(model, ctx)
    keys = set(strategy.state_dict())
    report = []
    for task in tasks:
        seen.append(task)
        dense = {name: getattr(model, name).weight.detach().clone() for name in ("fc1", "fc2")}
        strategy.before_task(task)
        layers = {name: w[-1] for name, w in strategy.wrapped.items()}
        assert isinstance(model.fc1, OrthogonalSVDLinear) and set(layers) == {"fc1", "fc2"}
        assert all(_rel(layer.reconstruct(), dense[name]) < 1e-5 for name, layer in layers.items())
        trainable = list(strategy.trainable_parameters())
        assert any(p is model.head.weight for p in trainable) == (cfg.train_others != "none")
        assert any(p is model.fc1.bias for p in trainable) == (cfg.train_others == "all")
        assert not any(p is layers["fc1"].U_high for p in trainable)
        opt = torch.optim.Adam(trainable, lr=1e-2)
        for i in range(steps):
            batch = next(iter(DataLoader(task.train, batch_size=8, shuffle=True, generator=g.manual_seed(i))))
            opt.zero_grad()
            strategy.training_step(batch, task).backward()
            strategy.after_backward()
            opt.step()
            strategy.after_step()
        strategy.after_task(task)
        report.append((layers, strategy.strategy_stats()))
    assert type(model.fc1) is nn.Linear and set(strategy.state_dict()) == keys  # a plain model between tasks
    return model, report


def test_strategy_freezes_top_directions_per_task_and_reports_k():
    model, report = _toy_run(OrthogonalSVDConfig(rank_rule="schedule", schedule_step=0.2, train_others="head"))
    for t, (_, stats) in enumerate(report):
        step = int(16 * 0.2 * (t + 1))  # floor(larger side · step · (t + 1)), capped at the smaller side
        assert stats["k"] == {"fc1": min(6, step), "fc2": min(12, step)}
    # the last task's frozen triplets hold in the final weights
    layers, _ = report[-1]
    for name in ("fc1", "fc2"):
        w, layer = getattr(model, name).weight.detach(), layers[name]
        assert _rel(w @ layer.V_high.T, layer.U_high * layer.S_high) < 1e-5


def test_adaptive_rule_scans_the_previous_task(monkeypatch):
    scanned, scan = [], OrthogonalSVD._scan
    monkeypatch.setattr(OrthogonalSVD, "_scan", lambda self, source: scanned.append(source.name) or scan(self, source))
    _, report = _toy_run(OrthogonalSVDConfig(), steps=3)
    assert scanned == ["t0", "t0"]  # the first task scans its own data, every later task its predecessor's
    for _, stats in report:
        assert set(stats["k"]) == {"fc1", "fc2"} and set(stats["importance"]) == {"fc1", "fc2"}
        assert 0 <= stats["k"]["fc1"] <= 6 and 0 <= stats["k"]["fc2"] <= 12


@pytest.mark.parametrize(("key", "value"), [("rank_rule", "auto"), ("train_others", "bias"), ("mrr", 0.9)])
def test_bad_config_is_one_clear_error(key, value):
    strategy = OrthogonalSVD(OrthogonalSVDConfig(**{key: value}))
    with pytest.raises(ValueError, match=key.split("_")[0]):
        strategy.setup(ToyModel(), None)


def test_runs_end_to_end_and_records_k_per_layer_per_task(results_root, capsys):
    from cl_suite import cli

    cfg = config.resolve({"scenario": {"name": "digits-tiny", "backbone": "scratch"}, "strategy": "orthogonal-svd", "tiny": True},
                         {"train.max_steps": "3"})  # fmt: skip
    store = runner.start(cfg, results_root, out=io.StringIO(), progress=False)
    record = store.read_record()
    assert record["status"] == "success" and record["cost"]["added_inference_params"] == 0
    stats = record["strategy_stats"]
    assert [s["task"] for s in stats] == [0, 1]
    assert all(len(s["k"]) == 12 and all(isinstance(k, int) for k in s["k"].values()) for s in stats)
    cli.main(["show", store.path.name, "--results", str(results_root)])
    shown = capsys.readouterr().out
    assert "strategy stats per task" in shown and "k={'backbone.layers.0.attn.q'" in shown


# -- cross-check with HF PEFT's OSF ------------------------------------------------------------------------------
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def test_projection_and_reconstruction_match_peft_osf():
    peft = pytest.importorskip("peft")
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    lm_config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32)  # fmt: skip
    ours = LlamaForCausalLM(lm_config).eval()
    reference = peft.get_peft_model(copy.deepcopy(ours), peft.OSFConfig(target_modules=TARGETS, effective_rank=0.4,
                                                                        rank_pattern={"down_proj": 5}))  # fmt: skip
    peft_layers = {n.removeprefix("base_model.model."): m for n, m in reference.named_modules()
                   if type(m).__module__.startswith("peft.tuners.osf") and hasattr(m, "osf_svd_params")}  # fmt: skip
    assert len(peft_layers) == 14
    layers = {}
    for name, peft_layer in peft_layers.items():
        parent_name, _, attr = name.rpartition(".")
        parent = ours.get_submodule(parent_name)
        layers[name] = OrthogonalSVDLinear(getattr(parent, attr), peft_layer.effective_rank["default"])
        setattr(parent, attr, layers[name])
    ours.requires_grad_(False)
    params = [p for layer in layers.values() for p in layer.low_parameters()]
    for p in params:
        p.requires_grad_(True)
    ref_params = [peft_layers[n].osf_svd_params["default"][f] for n in layers for f in ("U_low", "S_low", "V_low")]
    opt, ref_opt = torch.optim.SGD(params, lr=0.5), torch.optim.SGD(ref_params, lr=0.5)

    ids = torch.randint(0, 64, (3, 12), generator=torch.Generator().manual_seed(1))
    for _ in range(3):
        opt.zero_grad()
        ref_opt.zero_grad()
        loss, ref_loss = ours(input_ids=ids, labels=ids).loss, reference(input_ids=ids, labels=ids).loss
        torch.testing.assert_close(loss, ref_loss, rtol=1e-5, atol=1e-6)
        loss.backward()
        ref_loss.backward()  # PEFT projects in gradient hooks
        for layer in layers.values():
            layer.project_gradients()
        for p, q in zip(params, ref_params):
            torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-6)
        opt.step()
        ref_opt.step()
    merged = reference.merge_and_unload()
    for name, layer in layers.items():
        w_ref = merged.get_submodule(name).weight.detach()
        assert _rel(layer.reconstruct(), w_ref) < 1e-5
        assert _rel(layer.reconstruct(), layer.frozen_weight) > 1e-3 or layer.trainable_rank == 0
