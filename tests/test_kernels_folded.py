"""The folded PyTorch path (adapter folded into the weight for many tokens) against the reference spec."""

from __future__ import annotations

import pytest
import torch

from cl_suite.kernels import adapter_linear
from cl_suite.kernels.folded import adapter_linear_folded, fold_pays
from cl_suite.kernels.reference import adapter_linear_reference, gate_layout

D_IN, D_OUT, R = 24, 20, 6


def operands(dtype=torch.float64, seed=0):
    gen = torch.Generator().manual_seed(seed)
    t = lambda *s: torch.randn(*s, generator=gen, dtype=dtype).requires_grad_(True)  # noqa: E731
    return {"x": t(3, 40, D_IN), "weight": t(D_OUT, D_IN), "bias": t(D_OUT), "A": t(D_IN, R), "B": t(R, D_OUT),
            "up_bias": t(D_OUT)}  # fmt: skip


def graph_nodes(y: torch.Tensor) -> set[str]:
    seen, todo = set(), [y.grad_fn]
    while todo:
        fn = todo.pop()
        if fn is not None and type(fn).__name__ not in seen:
            seen.add(type(fn).__name__)
            todo += [f for f, _ in fn.next_functions]
    return seen


@pytest.mark.parametrize("gate_shape", [None, (R,), (1, R)], ids=["no-gate", "shared", "one-sample"])
def test_folded_forward_and_every_gradient_match_the_reference(gate_shape):
    ops = operands()
    x = ops["x"][:1] if gate_shape == (1, R) else ops["x"]  # a per-sample gate of a batch of one is shared
    gate = None if gate_shape is None else torch.randn(*gate_shape, dtype=torch.float64).requires_grad_(True)
    kw = {"weight": ops["weight"], "bias": ops["bias"], "up_bias": ops["up_bias"]}
    assert fold_pays(x, ops["A"], ops["B"], gate_layout(x.shape, gate, R)[0], ops["weight"], "identity", None)
    y = adapter_linear(x, ops["A"], ops["B"], gate, backend="torch", **kw)
    assert "FoldedAdapterBackward" in graph_nodes(y)  # it went through the folded op
    want = adapter_linear_reference(x, ops["A"], ops["B"], gate, **kw)
    torch.testing.assert_close(y, want, rtol=1e-12, atol=1e-12)
    inputs = [x, ops["A"], ops["B"], *kw.values(), *([gate] if gate is not None else [])]
    dy = torch.randn_like(y)
    for got, expected in zip(torch.autograd.grad(y, inputs, dy), torch.autograd.grad(want, inputs, dy), strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)


def test_folded_backward_passes_gradcheck():
    ops = operands()
    g = torch.randn(R, dtype=torch.float64, requires_grad=True)
    fn = lambda x, w, b, A, B, g: adapter_linear_folded(x, A, B, g, w, b, None)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (ops["x"][:1, :9], ops["weight"], ops["bias"], ops["A"], ops["B"], g))


def test_frozen_adapter_still_gives_the_input_gradient():
    ops = operands()
    x, (A, B, W) = ops["x"], (ops[k].detach() for k in ("A", "B", "weight"))
    (dx,) = torch.autograd.grad(adapter_linear_folded(x, A, B, None, W, None, None).sum(), [x])
    (want,) = torch.autograd.grad(adapter_linear_reference(x, A, B, weight=W).sum(), [x])
    torch.testing.assert_close(dx, want, rtol=1e-12, atol=1e-12)


def test_zero_adapter_leaves_the_base_output_bitwise():
    ops = {k: v.detach() for k, v in operands(torch.float32).items()}
    y = adapter_linear(ops["x"], ops["A"], torch.zeros(R, D_OUT), None, weight=ops["weight"], bias=ops["bias"],
                       backend="torch")  # fmt: skip
    assert torch.equal(y, torch.nn.functional.linear(ops["x"], ops["weight"], ops["bias"]))


def test_fold_is_chosen_only_where_it_is_exact_and_cheaper():
    ops = {k: v.detach() for k, v in operands(torch.float32).items()}
    x, A, B, W = ops["x"], ops["A"], ops["B"], ops["weight"]
    shared = gate_layout(x.shape, torch.ones(R), R)[0]
    assert fold_pays(x, A, B, None, W, "identity", None) and fold_pays(x, A, B, shared, W, "identity", None)
    assert not fold_pays(x[:1, :5], A, B, None, W, "identity", None)  # 5 tokens: the adapter is cheaper unfolded
    per_token = gate_layout(x.shape, torch.ones(3, 40, R), R)[0]
    assert not fold_pays(x, A, B, per_token, W, "identity", None)  # a per-token gate cannot be folded
    assert not fold_pays(x, A, B, None, W, "relu", None)
    assert not fold_pays(x, A, B, None, W, "identity", torch.zeros(R))  # a down bias sits inside the activation
    assert not fold_pays(x, A, B, None, None, "identity", None)  # no base weight (SEMA's adapter-only path)
    assert not fold_pays(x.half(), A.half(), B.half(), None, W.half(), "identity", None)  # ΔW would round away


def test_bench_kernels_prints_the_table_the_targets_and_a_csv(monkeypatch, tmp_path, capsys):
    from cl_suite import cli
    from cl_suite.kernels import bench

    monkeypatch.setattr(bench, "DIMS", (16,))
    monkeypatch.setattr(bench, "RANKS", (4,))
    monkeypatch.setattr(bench, "TOKENS", (1, 40))
    monkeypatch.setattr(bench, "TARGETS", (("target: small", 16, 8, 4, 64, 0, 2), ("target: merged", 16, 8, 4, 64, 3, 0)))
    for merged, frozen in ((3, 0), (1, 2)):
        case = bench._case(torch.device("cpu"), torch.float64, 16, 8, 4, 64, merged)
        fns = bench._variants(torch.device("cpu"), *case, backward=False, merged=merged, frozen=frozen)
        torch.testing.assert_close(fns["op"](), fns["loop"]())  # merged, frozen and live groups: what the loop computes
    csv_path = tmp_path / "k.csv"
    assert cli.main(["bench", "kernels", "--reps", "1", "--csv", str(csv_path)]) == 0
    out = capsys.readouterr().out
    assert "loop/op" in out and "target: merged fwd+bwd: op/linear" in out and "(>= 3x: " in out
    assert len(csv_path.read_text().splitlines()) == 1 + 2 * 4  # header + (2 grid + 2 target shapes) x (fwd, fwd+bwd)
    if not torch.cuda.is_available():
        assert cli.main(["bench", "kernels", "--device", "cuda"]) == 2  # a usage error, not a traceback


def frozen_bank(tokens: int, frozen: int, rank: int = 10, dtype=torch.float64):
    """A bank whose first ``frozen`` ranks do not train (as AdapterLinear's leading frozen groups): returns the
    op's operands and the trainable leaves."""
    gen = torch.Generator().manual_seed(3)
    t = lambda *s, grad: torch.randn(*s, generator=gen, dtype=dtype).requires_grad_(grad)  # noqa: E731
    x, W, b = t(tokens, D_IN, grad=True), t(D_OUT, D_IN, grad=False), t(D_OUT, grad=False)
    parts = [(t(D_IN, n, grad=g), t(n, D_OUT, grad=g), t(n, grad=g)) for n, g in ((frozen, False), (rank - frozen, True))]
    A, B, g = (torch.cat([p[i] for p in parts], -1 if i != 1 else 0) for i in range(3))
    return {"x": x, "A": A, "B": B, "gate": g, "weight": W, "bias": b}, [x, *parts[1]]


def grads(y, leaves, dy):
    return [torch.zeros_like(v) if d is None else d
            for v, d in zip(leaves, torch.autograd.grad(y, leaves, dy, allow_unused=True), strict=True)]  # fmt: skip


@pytest.mark.parametrize(("tokens", "act"), [(120, "identity"), (120, "relu"), (3, "identity")],
                         ids=["folded", "reference", "few-tokens"])  # fmt: skip
@pytest.mark.parametrize("frozen", [0, 4, 10])
def test_frozen_ranks_change_neither_the_output_nor_the_trainable_gradients(tokens, act, frozen):
    ops, leaves = frozen_bank(tokens, frozen)
    x, A, B, gate = ops.pop("x"), ops.pop("A"), ops.pop("B"), ops.pop("gate")
    y = adapter_linear(x, A, B, gate, act=act, frozen_ranks=frozen, backend="torch", **ops)
    want = adapter_linear_reference(x, A, B, gate, act=act, **ops)
    torch.testing.assert_close(y, want, rtol=1e-12, atol=1e-12)
    dy = torch.randn_like(y)
    for got, expected in zip(grads(y, leaves, dy), grads(want, leaves, dy), strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)


def test_adapter_linear_hands_its_leading_frozen_groups_to_the_op(monkeypatch):
    from torch import nn

    from cl_suite.adapters import AdapterLinear, linear

    seen = []
    monkeypatch.setattr(linear, "adapter_linear", lambda *a, **kw: seen.append(kw["frozen_ranks"]) or a[0])
    for gate, expected in (("none", [0, 4, 6]), ("importance", [0, 4, 6]), ("topk", [0, 0, 0])):
        layer = AdapterLinear(nn.Linear(D_IN, D_OUT), gate=gate)
        layer.add_group(4), layer.add_group(2)
        layer(torch.randn(2, D_IN))  # both train
        layer.freeze_group(0)
        layer(torch.randn(2, D_IN))  # the first 4 ranks are frozen
        layer.freeze_group(1)
        layer.add_group(3)
        layer(torch.randn(2, D_IN))  # 4 + 2 frozen ranks, then a trainable group
        assert seen[-3:] == expected, gate
