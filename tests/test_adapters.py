"""AdapterLinear, the bottleneck mixture and injection, on the PyTorch path (the spec)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cl_suite.adapters import AdapterLinear, AdapterMixture, inject, select_targets
from cl_suite.kernels import resolve_backend
from cl_suite.kernels.reference import adapter_linear_loop, adapter_linear_reference, gate_layout
from cl_suite.models.classifier import ClassifierModel
from cl_suite.models.tiny_vit import TinyViT


def layer(gate="none", groups=3, rank=4, seed=0, **kw):
    torch.manual_seed(seed)
    al = AdapterLinear(nn.Linear(20, 12), gate=gate, backend="torch", **kw)
    for _ in range(groups):
        i = al.add_group(rank, alpha=2 * rank)
        nn.init.normal_(al.groups[i].B)
    return al


def test_zero_initialised_group_is_bitwise_the_base():
    al = layer(groups=0)
    x = torch.randn(2, 5, 20)
    base = al.base(x)
    al.add_group(8, alpha=16)  # B = 0
    assert torch.equal(al(x), base)


@pytest.mark.parametrize("gate", ["none", "importance", "topk", "router"])
def test_freezing_keeps_the_output_bitwise_and_stops_gradients(gate):
    al = layer(gate, topk=3)
    x = torch.randn(2, 5, 20)
    before = al(x)
    al.freeze_group(0)
    assert torch.equal(al(x), before)
    al(x).sum().backward()
    assert al.groups[0].A.grad is None and al.groups[1].A.grad is not None
    assert al.base.weight.grad is None


@pytest.mark.parametrize("gate", ["none", "importance"])
def test_merge_reproduces_the_unmerged_output(gate):
    al = layer(gate)
    x = torch.randn(4, 7, 20)
    with torch.no_grad():
        before = al(x)
        al.merge_groups([0, 2])
        assert len(al.groups) == 1 and al.merged_groups == 2
        torch.testing.assert_close(al(x), before, rtol=1e-5, atol=1e-5)
        al.merge_groups()
        assert len(al.groups) == 0
        torch.testing.assert_close(al(x), before, rtol=1e-5, atol=1e-5)


def test_dynamic_gates_refuse_to_merge():
    with pytest.raises(ValueError, match="cannot be merged"):
        layer("topk").merge_groups()


def test_one_op_call_equals_the_per_group_loop():
    """The fused bank is the sum of its groups, each with its own scale."""
    al = layer("none", groups=4)
    x = torch.randn(3, 6, 20)
    groups = [(g.A, g.B, g.scale.expand(g.rank)) for g in al.groups]
    torch.testing.assert_close(al(x), adapter_linear_loop(x, al.base.weight, al.base.bias, groups))


def test_one_forward_is_one_op_call(monkeypatch):
    import cl_suite.adapters.linear as mod

    calls = []
    real = mod.adapter_linear
    monkeypatch.setattr(mod, "adapter_linear", lambda *a, **k: calls.append(1) or real(*a, **k))
    layer("router", groups=5)(torch.randn(2, 3, 20))
    assert len(calls) == 1


def test_topk_gate_is_sparse_per_token_and_prunes_at_inference():
    al = layer("topk", groups=2, rank=6, topk=3, temperature=0.5, threshold=0.3)
    x = torch.randn(4, 20)
    A, _ = al._factors()
    al.train()
    g = al._topk_gate(x, A)
    assert ((g > 0).sum(-1) == 3).all()
    torch.testing.assert_close(g.sum(-1), torch.ones(4))
    al.eval()
    s = torch.nn.functional.normalize(x @ A, dim=-1)
    assert (al._topk_gate(x, A)[s < 0.3] == 0).all()


def test_router_gate_is_per_sample_and_sums_to_group_scales():
    al = layer("router", groups=3, rank=2)
    x = torch.randn(2, 5, 20)
    g = al._gate(x, al._factors()[0])
    assert g.shape == (2, 6)
    torch.testing.assert_close((g / 2.0).view(2, 3, 2)[..., 0].sum(-1), torch.ones(2))  # scale alpha/r = 2


def test_prune_ranks_and_groups():
    al = layer("importance", groups=2, rank=4)
    x = torch.randn(3, 20)
    with torch.no_grad():
        al.groups[0].importance[1:3] = 0
        before = al(x)
        al.prune_ranks(0, al.groups[0].importance != 0)
        assert al.groups[0].rank == 2
        torch.testing.assert_close(al(x), before)
        al.prune_groups([1])
        assert al.rank == 2


def test_mixture_is_a_router_weighted_sum_of_bottleneck_experts():
    torch.manual_seed(0)
    mix = AdapterMixture(16, 16, bottleneck=4, act="gelu", backend="torch")
    for _ in range(3):
        mix.add_expert()
    for e in mix.experts:
        nn.init.normal_(e.up)
        nn.init.normal_(e.up_bias)
        nn.init.normal_(e.down_bias)
    x = torch.randn(2, 5, 16)
    w = mix.routing(x)
    want = sum(w[:, i, None, None] * (torch.nn.functional.gelu(x @ e.down + e.down_bias) @ e.up + e.up_bias)
               for i, e in enumerate(mix.experts))  # fmt: skip
    torch.testing.assert_close(mix(x), want, rtol=1e-5, atol=1e-5)


def test_gate_layout_errors_and_shapes():
    assert gate_layout(torch.Size([2, 5, 8]), torch.ones(2, 3), 3)[1] == 5
    assert gate_layout(torch.Size([2, 5, 8]), torch.ones(3), 3)[1] == 10
    with pytest.raises(ValueError, match="accepted"):
        gate_layout(torch.Size([2, 5, 8]), torch.ones(4, 3), 3)
    with pytest.raises(ValueError, match="accepted: identity"):
        adapter_linear_reference(torch.ones(2, 4), torch.ones(4, 2), torch.ones(2, 3), act="tanh")


def test_backend_errors():
    with pytest.raises(ValueError, match="accepted: auto, torch, triton"):
        resolve_backend("cuda", torch.device("cpu"))


def _model():
    torch.manual_seed(0)
    return ClassifierModel(TinyViT(8, 2, dim=16, depth=2, heads=2), 16, [(0, 1), (2, 3)], 4, "tiny")


def test_inject_by_role_and_pattern():
    model = _model()
    names = [n for n, _ in select_targets(model, ["q", "*layers.1.mlp.fc2"])]
    assert names == ["backbone.layers.0.attn.q", "backbone.layers.1.attn.q", "backbone.layers.1.mlp.fc2"]
    x = {"x": torch.rand(3, 1, 8, 8)}
    before = model.logits(x)
    layers = inject(model, ["q", "*layers.1.mlp.fc2"], backend="torch")
    assert isinstance(model.backbone.layers[0].attn.q, AdapterLinear)
    assert inject(model, ["q"])["backbone.layers.0.attn.q"] is layers["backbone.layers.0.attn.q"]
    for al in layers.values():
        al.add_group(4)
    torch.testing.assert_close(model.logits(x), before)  # zero-initialised B
    with pytest.raises(ValueError, match="match no linear layer"):
        select_targets(model, ["gate_proj"])
