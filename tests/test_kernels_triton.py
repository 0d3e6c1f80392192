"""The Triton adapter kernels against the PyTorch spec, under TRITON_INTERPRET=1 on a CPU (real kernels on CUDA).

The interpreter must be chosen before triton is first imported. If some earlier test module already imported triton
without it, this module re-runs itself in a fresh interpreter process (one test) instead of failing.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

_CUDA = torch.cuda.is_available()
IN_PROCESS = _CUDA or os.environ.get("TRITON_INTERPRET") == "1" or "triton" not in sys.modules
if not _CUDA and IN_PROCESS:
    os.environ["TRITON_INTERPRET"] = "1"

pytest.importorskip("triton")

from cl_suite.kernels.reference import adapter_linear_reference  # noqa: E402

DEV = "cuda" if _CUDA else "cpu"
TOL = {torch.float32: 1e-4 if not _CUDA else 2e-2, torch.float16: 1e-2, torch.bfloat16: 3e-2}
BLOCKS = (16, 16, 16)  # several blocks along every dimension of the small shapes below
needs_process = pytest.mark.skipif(not IN_PROCESS, reason="triton was imported before the interpreter was set")


def triton_op(*args, **kwargs):
    from cl_suite.kernels.triton_adapter import adapter_linear_triton

    return adapter_linear_triton(*args, **kwargs)


def make(dtype, gate_mode, *, S=3, L=5, K=40, M=24, R=11, base=True, biases=True, seed=0):
    gen = torch.Generator().manual_seed(seed)
    t = lambda *s, scale=1.0: (torch.randn(*s, generator=gen) * scale).to(DEV, dtype).requires_grad_(True)  # noqa: E731
    gate = {"none": None, "shared": t(R), "sample": t(S, R), "token": t(S, L, R)}[gate_mode]
    return {
        "x": t(S, L, K), "A": t(K, R, scale=K**-0.5), "B": t(R, M, scale=R**-0.5), "gate": gate,
        "weight": t(M, K, scale=K**-0.5) if base else None, "bias": t(M) if base and biases else None,
        "down_bias": t(R) if biases else None, "up_bias": t(M) if biases else None,
    }  # fmt: skip


def run(fn, ops, act, dy_seed=1, **kw):
    x, A, B, gate = ops["x"], ops["A"], ops["B"], ops["gate"]
    rest = {k: ops[k] for k in ("weight", "bias", "down_bias", "up_bias")}
    y = fn(x, A, B, gate, act=act, **rest, **kw)
    inputs = [v for v in ops.values() if v is not None]
    dy = torch.randn(y.shape, generator=torch.Generator().manual_seed(dy_seed)).to(DEV, y.dtype)
    return [y, *torch.autograd.grad(y, inputs, dy)]


def assert_close(got, want, tol, what):
    for i, (a, b) in enumerate(zip(got, want)):
        err = (a.float() - b.float()).abs().max().item() / max(b.float().abs().max().item(), 1e-6)
        assert err <= tol, f"{what}: output {i} (0 = y, then grads in input order) relative error {err:.2e} > {tol}"


def reference_fp32(ops, act):
    """The spec evaluated in fp32 from the same (possibly fp16) inputs."""
    up = {k: (v.detach().float().requires_grad_(True) if v is not None else None) for k, v in ops.items()}
    return list(run(adapter_linear_reference, up, act))


@needs_process
@pytest.mark.parametrize("gate_mode", ["none", "shared", "sample", "token"])
@pytest.mark.parametrize("act", ["identity", "relu", "gelu"])
def test_fused_path_fp32_matches_reference(act, gate_mode):
    ops = make(torch.float32, gate_mode)
    got = run(triton_op, ops, act, path="fused", blocks=BLOCKS)
    assert_close(got, reference_fp32(ops, act), TOL[torch.float32], f"fused {act} {gate_mode}")


@needs_process
@pytest.mark.parametrize("gate_mode", ["none", "shared", "sample", "token"])
@pytest.mark.parametrize("act", ["identity", "gelu"])
def test_split_path_fp32_matches_reference(act, gate_mode):
    ops = make(torch.float32, gate_mode, seed=2)
    got = run(triton_op, ops, act, path="split", blocks=BLOCKS)
    assert_close(got, reference_fp32(ops, act), TOL[torch.float32], f"split {act} {gate_mode}")


@needs_process
@pytest.mark.parametrize("path", ["fused", "split"])
@pytest.mark.parametrize(("act", "gate_mode"), [("identity", "token"), ("relu", "sample"), ("gelu", "shared")])
def test_fp16_matches_reference(path, act, gate_mode):
    ops = make(torch.float16, gate_mode, seed=3)
    got = run(triton_op, ops, act, path=path, blocks=BLOCKS)
    assert got[0].dtype == torch.float16
    assert_close(got, reference_fp32(ops, act), TOL[torch.float16], f"fp16 {path} {act} {gate_mode}")


@needs_process
@pytest.mark.parametrize("path", ["fused", "split"])
def test_frozen_ranks_get_zero_gradients_and_the_rest_match(path):
    """``frozen_ranks`` skips the gradient products of the leading ranks: their slots are zero, the output, dx and
    every other gradient are the reference's."""
    ops = make(torch.float32, "sample", seed=4)
    k = 5
    got = run(triton_op, ops, "gelu", path=path, blocks=BLOCKS, frozen_ranks=k)
    want = reference_fp32(ops, "gelu")
    names = [name for name, v in ops.items() if v is not None]
    for i, name in enumerate(names, 1):  # zero the frozen slots of the expected rank-indexed gradients
        if name in ("A", "gate", "down_bias"):
            want[i] = want[i].clone()
            want[i][..., :k] = 0
        elif name == "B":
            want[i] = want[i].clone()
            want[i][:k] = 0
    assert_close(got, want, TOL[torch.float32], f"frozen {path}")


@pytest.mark.skipif(not _CUDA, reason="bf16 tl.dot is wrong under the Triton interpreter; GPU only")
def test_bf16_matches_reference_on_cuda():
    ops = make(torch.bfloat16, "token")
    assert_close(run(triton_op, ops, "gelu"), reference_fp32(ops, "gelu"), TOL[torch.bfloat16], "bf16")


@needs_process
@pytest.mark.parametrize("path", ["fused", "split"])
def test_adapter_only_and_odd_sizes(path):
    """No base weight (SEMA-style adapter-only op), a single token, rank 1 and 33 columns."""
    for kw in ({"S": 1, "L": 1, "K": 33, "M": 7, "R": 1}, {"S": 2, "L": 7, "K": 17, "M": 33, "R": 20}):
        ops = make(torch.float32, "sample", base=False, **kw)
        assert_close(run(triton_op, ops, "relu", path=path, blocks=BLOCKS), reference_fp32(ops, "relu"),
                     TOL[torch.float32], f"adapter-only {kw}")  # fmt: skip


@needs_process
@pytest.mark.parametrize("path", ["fused", "split"])
def test_zero_group_leaves_output_bit_identical(path):
    """A group with zero B, or with a zero gate, adds exact zeros: the output is bitwise the one without it."""
    ops = make(torch.float32, "token", R=6)
    x, A, B, g, W, b = (ops[k].detach() for k in ("x", "A", "B", "gate", "weight", "bias"))
    without = triton_op(x, A, B, g, weight=W, bias=b, path=path, blocks=BLOCKS)
    extra_A = torch.randn(A.shape[0], 5, device=DEV)
    zero_B = triton_op(x, torch.cat([A, extra_A], 1), torch.cat([B, torch.zeros(5, B.shape[1], device=DEV)]),
                       torch.cat([g, torch.rand(*g.shape[:-1], 5, device=DEV)], -1), weight=W, bias=b, path=path,
                       blocks=BLOCKS)  # fmt: skip
    zero_gate = triton_op(x, torch.cat([A, extra_A], 1), torch.cat([B, torch.randn(5, B.shape[1], device=DEV)]),
                          torch.cat([g, torch.zeros(*g.shape[:-1], 5, device=DEV)], -1), weight=W, bias=b, path=path,
                          blocks=BLOCKS)  # fmt: skip
    assert torch.equal(without, zero_B)
    assert torch.equal(without, zero_gate)


@needs_process
def test_dispatch_forced_triton_and_auto_on_cpu(monkeypatch):
    from cl_suite.kernels import adapter_linear, resolve_backend

    ops = make(torch.float32, "shared", seed=5)
    args = (ops["x"], ops["A"], ops["B"], ops["gate"])
    monkeypatch.setenv("CL_SUITE_KERNELS", "triton")
    assert resolve_backend(None, ops["x"].device) == "triton"
    forced = adapter_linear(*args, weight=ops["weight"])
    monkeypatch.setenv("CL_SUITE_KERNELS", "torch")
    assert resolve_backend(None, ops["x"].device) == "torch"
    torch_path = adapter_linear(*args, weight=ops["weight"])
    assert_close([forced], [torch_path], TOL[torch.float32], "dispatch")
    monkeypatch.delenv("CL_SUITE_KERNELS")
    assert resolve_backend(None, torch.device(DEV)) == ("triton" if _CUDA else "torch")


@pytest.mark.skipif(IN_PROCESS, reason="runs in process")
def test_rerun_in_fresh_interpreter_process():
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__],
                          env=env, capture_output=True, text=True, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
