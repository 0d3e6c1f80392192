"""Fused Triton forward and backward of the adapter op (spec: cl_suite.kernels.reference).

Two forward paths (the designs of reference/kernels.md §2.2, written for this project):

* **fused (F1, small N):** one launch over (token block, output-column block). The same ``x`` tile feeds the base
  GEMM ``x·Wᵀ`` and the shrink ``x·A`` inside one K loop; bias, activation and gate are applied in registers and the
  expand ``s·B`` is added in the epilogue. The shrink is recomputed per column block, which is free while memory-bound.
* **split (F2, large N):** two launches, as in LoRAFusion's ``xw_sb``: a shrink kernel writes ``s = act(x·A+b)⊙g``
  (N×R), then a GEMM seeds its accumulator with ``s·B`` before its K loop over ``x·Wᵀ``.

The backward is the same two kernels with transposed strides (W→Wᵀ, A→Bᵀ, B→Aᵀ) in *gradient mode*: the shrink of
``dy`` gives ``u = dy·Bᵀ``, the epilogue forms ``t = u ⊙ g ⊙ act'(pre)``, and the expand gives
``dx = dy·W + t·Aᵀ``. The tall-skinny reductions ``dA = xᵀt``, ``dB = sᵀdy`` and ``dgate`` use torch (cuBLAS), as
unsloth and LoRAFusion do. W is frozen unless it requires grad (then ``dW = dyᵀx``, also torch).

Ranks are padded to ``max(16, next_pow2(R))`` for ``tl.dot`` and masked; row and column offsets are int64 so long
sequences cannot overflow (vLLM #53028). Accumulation is fp32. ``import triton`` happens only in this module, which
the dispatcher imports lazily.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from cl_suite.kernels.reference import check_args, gate_layout, pad_frozen

ACT_IDS = {"identity": 0, "relu": 1, "gelu": 2}
SMALL_N = 128  # at or below this many tokens the one-launch fused path is used


@triton.jit
def _act_fwd(h, ACT: tl.constexpr):
    if ACT == 1:
        h = tl.maximum(h, 0.0)
    elif ACT == 2:
        h = 0.5 * h * (1.0 + tl.erf(h * 0.7071067811865476))
    return h


@triton.jit
def _act_grad(h, ACT: tl.constexpr):
    if ACT == 0:
        d = tl.full(h.shape, 1.0, tl.float32)
    elif ACT == 1:
        d = tl.where(h > 0.0, 1.0, 0.0)
    else:
        d = 0.5 * (1.0 + tl.erf(h * 0.7071067811865476)) + h * 0.3989422804014327 * tl.exp(-0.5 * h * h)
    return d


@triton.jit
def _epilogue(h, rows, offs_r, N, R, rows_per_gate, g_ptr, stride_gg, stride_gr, bd_ptr, pre_ptr, stride_pn,
              stride_pr, ACT: tl.constexpr, HAS_GATE: tl.constexpr, HAS_BDOWN: tl.constexpr, GRAD: tl.constexpr):
    """Forward: ``act(h + b_down) ⊙ g``. Gradient mode (h is u = dy·Bᵀ): ``u ⊙ g ⊙ act'(pre)``."""
    rmask = offs_r < R
    mask2 = (rows[:, None] < N) & rmask[None, :]
    if GRAD:
        if ACT != 0:
            pre = tl.load(pre_ptr + rows[:, None] * stride_pn + offs_r[None, :] * stride_pr, mask=mask2, other=0.0)
            h = h * _act_grad(pre.to(tl.float32), ACT)
    else:
        if HAS_BDOWN:
            h = h + tl.load(bd_ptr + offs_r, mask=rmask, other=0.0).to(tl.float32)[None, :]
        h = _act_fwd(h, ACT)
    if HAS_GATE:
        grow = rows // rows_per_gate
        g = tl.load(g_ptr + grow[:, None] * stride_gg + offs_r[None, :] * stride_gr, mask=mask2, other=0.0)
        h = h * g.to(tl.float32)
    return h


@triton.jit
def _shrink_kernel(x_ptr, a_ptr, h_ptr, s_ptr, g_ptr, bd_ptr, pre_ptr, N, K, R, rows_per_gate,
                   stride_xn, stride_xk, stride_ak, stride_ar, stride_hn, stride_hr, stride_sn, stride_sr,
                   stride_gg, stride_gr, stride_pn, stride_pr,
                   ACT: tl.constexpr, HAS_GATE: tl.constexpr, HAS_BDOWN: tl.constexpr, GRAD: tl.constexpr,
                   STORE_H: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_R: tl.constexpr):
    """First launch of the split path: ``h = x·A`` (stored pre-activation) and ``s = epilogue(h)`` per token block."""
    pid = tl.program_id(0)
    rows = pid.to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M).to(tl.int64)
    offs_r = tl.arange(0, BLOCK_R).to(tl.int64)
    h = tl.zeros((BLOCK_M, BLOCK_R), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K).to(tl.int64)
        xt = tl.load(x_ptr + rows[:, None] * stride_xn + offs_k[None, :] * stride_xk,
                     mask=(rows[:, None] < N) & (offs_k[None, :] < K), other=0.0)
        at = tl.load(a_ptr + offs_k[:, None] * stride_ak + offs_r[None, :] * stride_ar,
                     mask=(offs_k[:, None] < K) & (offs_r[None, :] < R), other=0.0)
        h = tl.dot(xt, at.to(xt.dtype), h)
    mask2 = (rows[:, None] < N) & (offs_r[None, :] < R)
    if HAS_BDOWN and not GRAD:
        h = h + tl.load(bd_ptr + offs_r, mask=offs_r < R, other=0.0).to(tl.float32)[None, :]
    if STORE_H:
        tl.store(h_ptr + rows[:, None] * stride_hn + offs_r[None, :] * stride_hr, h, mask=mask2)
    s = _epilogue(h, rows, offs_r, N, R, rows_per_gate, g_ptr, stride_gg, stride_gr, bd_ptr, pre_ptr,
                  stride_pn, stride_pr, ACT, HAS_GATE, False, GRAD)
    tl.store(s_ptr + rows[:, None] * stride_sn + offs_r[None, :] * stride_sr, s, mask=mask2)


@triton.jit
def _fused_kernel(x_ptr, w_ptr, a_ptr, b_ptr, y_ptr, s_ptr, h_ptr, g_ptr, bd_ptr, pre_ptr, bias_ptr, bu_ptr,
                  N, K, M, R, rows_per_gate,
                  stride_xn, stride_xk, stride_wk, stride_wm, stride_ak, stride_ar, stride_br, stride_bm,
                  stride_yn, stride_ym, stride_sn, stride_sr, stride_hn, stride_hr, stride_gg, stride_gr,
                  stride_pn, stride_pr,
                  ACT: tl.constexpr, HAS_BASE: tl.constexpr, S_GIVEN: tl.constexpr, HAS_GATE: tl.constexpr,
                  HAS_BDOWN: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_BUP: tl.constexpr, GRAD: tl.constexpr,
                  STORE_H: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                  BLOCK_R: tl.constexpr):
    """``y = x·W + epilogue(x·A)·B (+ biases)`` for one (token block, column block); or, with S_GIVEN, the second
    launch of the split path, whose accumulator starts from ``s·B``."""
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    rows = pid_m.to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M).to(tl.int64)
    cols = pid_n.to(tl.int64) * BLOCK_N + tl.arange(0, BLOCK_N).to(tl.int64)
    offs_r = tl.arange(0, BLOCK_R).to(tl.int64)
    rmask = (rows[:, None] < N) & (offs_r[None, :] < R)
    bt = tl.load(b_ptr + offs_r[:, None] * stride_br + cols[None, :] * stride_bm,
                 mask=(offs_r[:, None] < R) & (cols[None, :] < M), other=0.0)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    if S_GIVEN:
        st = tl.load(s_ptr + rows[:, None] * stride_sn + offs_r[None, :] * stride_sr, mask=rmask, other=0.0)
        acc = tl.dot(st.to(bt.dtype), bt, acc)
    h = tl.zeros((BLOCK_M, BLOCK_R), dtype=tl.float32)
    if HAS_BASE or not S_GIVEN:
        for k0 in range(0, K, BLOCK_K):
            offs_k = k0 + tl.arange(0, BLOCK_K).to(tl.int64)
            xt = tl.load(x_ptr + rows[:, None] * stride_xn + offs_k[None, :] * stride_xk,
                         mask=(rows[:, None] < N) & (offs_k[None, :] < K), other=0.0)
            if HAS_BASE:
                wt = tl.load(w_ptr + offs_k[:, None] * stride_wk + cols[None, :] * stride_wm,
                             mask=(offs_k[:, None] < K) & (cols[None, :] < M), other=0.0)
                acc = tl.dot(xt, wt.to(xt.dtype), acc)
            if not S_GIVEN:
                at = tl.load(a_ptr + offs_k[:, None] * stride_ak + offs_r[None, :] * stride_ar,
                             mask=(offs_k[:, None] < K) & (offs_r[None, :] < R), other=0.0)
                h = tl.dot(xt, at.to(xt.dtype), h)
    if not S_GIVEN:
        if HAS_BDOWN and not GRAD:
            h = h + tl.load(bd_ptr + offs_r, mask=offs_r < R, other=0.0).to(tl.float32)[None, :]
        if STORE_H:  # noqa: SIM102 (a constexpr and a runtime test stay apart in Triton)
            if pid_n == 0:
                tl.store(h_ptr + rows[:, None] * stride_hn + offs_r[None, :] * stride_hr, h, mask=rmask)
        s = _epilogue(h, rows, offs_r, N, R, rows_per_gate, g_ptr, stride_gg, stride_gr, bd_ptr, pre_ptr,
                      stride_pn, stride_pr, ACT, HAS_GATE, False, GRAD)
        acc = tl.dot(s.to(bt.dtype), bt, acc)
    if HAS_BIAS:
        acc += tl.load(bias_ptr + cols, mask=cols < M, other=0.0).to(tl.float32)[None, :]
    if HAS_BUP:
        acc += tl.load(bu_ptr + cols, mask=cols < M, other=0.0).to(tl.float32)[None, :]
    tl.store(y_ptr + rows[:, None] * stride_yn + cols[None, :] * stride_ym, acc.to(y_ptr.dtype.element_ty),
             mask=(rows[:, None] < N) & (cols[None, :] < M))


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


def _blocks(n: int, k: int, m: int) -> tuple[int, int, int]:
    """Block sizes: tensor-core friendly on a GPU; as large as the problem under the interpreter (cost ∝ programs)."""
    if _interpreting():
        cap = lambda v: max(16, min(64, triton.next_power_of_2(v)))  # noqa: E731
        return cap(n), cap(m), cap(k)
    if n <= 16:
        return 16, 64, 128
    return (64 if n <= SMALL_N else 128), 128, 64


def _launch(x, w, A, B, g, rows_per_gate, bd, pre, bias, bu, act, grad, store_h, path, blocks=None):
    """Run one direction of the op on 2-D operands given in the kernel's (K-major) roles.

    x (N,K); w (K,M) or None; A (K,R); B (R,M). Returns (y (N,M), h (N,R) fp32 or None).
    """
    n, k = x.shape
    r, m = B.shape
    bm, bn, bk = blocks or _blocks(n, k, m)
    br = max(16, triton.next_power_of_2(r))
    y = torch.empty((n, m), device=x.device, dtype=x.dtype)
    h = torch.empty((n, r), device=x.device, dtype=torch.float32) if store_h else None
    dummy = y  # pointer for absent operands; never read (its constexpr flag is off)
    gs = g.stride() if g is not None else (0, 0)
    ps = pre.stride() if pre is not None else (0, 0)
    hs = h.stride() if h is not None else (0, 0)
    ws = w.stride() if w is not None else (0, 0)
    flags = {"ACT": ACT_IDS[act], "HAS_GATE": g is not None, "HAS_BDOWN": bd is not None, "GRAD": grad}
    use_split = path == "split" or (path == "auto" and n > SMALL_N)
    s = None
    if use_split:
        s = torch.empty((n, r), device=x.device, dtype=torch.float32)
        _shrink_kernel[(triton.cdiv(n, bm),)](
            x, A, h if h is not None else dummy, s, g if g is not None else dummy, bd if bd is not None else dummy,
            pre if pre is not None else dummy, n, k, r, rows_per_gate, *x.stride(), *A.stride(), *hs, *s.stride(),
            *gs, *ps, STORE_H=store_h, BLOCK_M=bm, BLOCK_K=bk, BLOCK_R=br, **flags)  # fmt: skip
    ss = s.stride() if s is not None else (0, 0)
    _fused_kernel[(triton.cdiv(n, bm), triton.cdiv(m, bn))](
        x, w if w is not None else dummy, A, B, y, s if s is not None else dummy, h if h is not None else dummy,
        g if g is not None else dummy, bd if bd is not None else dummy, pre if pre is not None else dummy,
        bias if bias is not None else dummy, bu if bu is not None else dummy, n, k, m, r, rows_per_gate,
        *x.stride(), *ws, *A.stride(), *B.stride(), *y.stride(), *ss, *hs, *gs, *ps,
        HAS_BASE=w is not None, S_GIVEN=use_split, HAS_BIAS=bias is not None, HAS_BUP=bu is not None,
        STORE_H=store_h and not use_split, BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, BLOCK_R=br, **flags)  # fmt: skip
    return y, h


class _FusedAdapter(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x2, weight, bias, A, B, g, bd, bu, rows_per_gate, act, path, blocks, frozen_ranks):
        w = weight.t() if weight is not None else None  # (d_in, d_out) view: no copy, strides do the work
        y, pre = _launch(x2, w, A, B, g, rows_per_gate, bd, None, bias, bu, act, False, True, path, blocks)
        ctx.save_for_backward(x2, weight, A, B, g, pre)
        ctx.rows_per_gate, ctx.act, ctx.path, ctx.blocks, ctx.frozen_ranks = rows_per_gate, act, path, blocks, frozen_ranks
        ctx.flags = (bias is not None, bd is not None, bu is not None)
        return y

    @staticmethod
    def backward(ctx, dy):
        x2, weight, A, B, g, pre = ctx.saved_tensors
        rows, act = ctx.rows_per_gate, ctx.act
        dy = dy.contiguous()
        # dx = dy·W + (u ⊙ g ⊙ act'(pre))·Aᵀ with u = dy·Bᵀ, from the forward kernels in gradient mode.
        dx, u = _launch(dy, weight, B.t(), A.t(), g, rows, None, pre, None, None, act, True, True, ctx.path,
                        ctx.blocks)  # fmt: skip
        a = torch.nn.functional.gelu(pre) if act == "gelu" else (pre.clamp_min(0) if act == "relu" else pre)
        t = u
        if act != "identity":
            t = t * (torch.where(pre > 0, 1.0, 0.0) if act == "relu" else _gelu_grad(pre))
        gf = None
        if g is not None:
            gf = g.float()
            t = _apply_gate(t, gf, rows)
        s = _apply_gate(a, gf, rows) if g is not None else a
        need, k = ctx.needs_input_grad, ctx.frozen_ranks
        t, s, a, u = t[:, k:], s[:, k:], a[:, k:], u[:, k:]  # frozen ranks: no dA / dB / dgate work
        dW = dy.t().mm(x2).to(weight.dtype) if weight is not None and need[1] else None
        dbias = dy.float().sum(0).to(dy.dtype) if ctx.flags[0] and need[2] else None
        dA = pad_frozen(x2.t().float().mm(t).to(A.dtype), k, 1) if need[3] else None
        dB = pad_frozen(s.t().mm(dy.float()).to(B.dtype), k, 0) if need[4] else None
        dg = None
        if g is not None and need[5]:
            dg = pad_frozen((a * u).reshape(-1, rows, a.shape[1]).sum(1).to(g.dtype), k, 1)
        dbd = pad_frozen(t.sum(0).to(A.dtype), k, 0) if ctx.flags[1] and need[6] else None
        dbu = dy.float().sum(0).to(dy.dtype) if ctx.flags[2] and need[7] else None
        return dx if need[0] else None, dW, dbias, dA, dB, dg, dbd, dbu, None, None, None, None, None


def _gelu_grad(h: torch.Tensor) -> torch.Tensor:
    return 0.5 * (1.0 + torch.erf(h * 0.7071067811865476)) + h * 0.3989422804014327 * torch.exp(-0.5 * h * h)


def _apply_gate(t: torch.Tensor, g: torch.Tensor, rows: int) -> torch.Tensor:
    if rows == 1:
        return t * g
    return (t.view(-1, rows, t.shape[1]) * g.unsqueeze(1)).view_as(t)


def adapter_linear_triton(
    x: torch.Tensor, A: torch.Tensor, B: torch.Tensor, gate: torch.Tensor | None = None, *,
    weight: torch.Tensor | None = None, bias: torch.Tensor | None = None, act: str = "identity",
    down_bias: torch.Tensor | None = None, up_bias: torch.Tensor | None = None, frozen_ranks: int = 0,
    path: str = "auto", blocks: tuple[int, int, int] | None = None,
) -> torch.Tensor:  # fmt: skip
    """The fused op (same arguments as the reference). ``path``: auto | fused | split; ``blocks`` (M, N, K) is for
    tests that want to force several blocks per dimension."""
    check_args(x, A, B, weight, act)
    if path not in ("auto", "fused", "split"):
        raise ValueError(f"unknown path {path!r}; accepted: auto, fused, split")
    rank, d_out = B.shape
    g, rows = gate_layout(x.shape, gate, rank)
    x2 = x.reshape(-1, x.shape[-1])
    if x2.shape[0] == 0:
        return x.new_zeros(*x.shape[:-1], d_out)
    if g is not None and g.shape[0] * rows != x2.shape[0]:
        rows = x2.shape[0]  # a shared gate: one row covers every token
    if not 0 <= frozen_ranks <= rank:
        raise ValueError(f"frozen_ranks must be in [0, {rank}], got {frozen_ranks}")
    y = _FusedAdapter.apply(x2, weight, bias, A, B, g, down_bias, up_bias, rows, act, path, blocks, frozen_ranks)
    return y.view(*x.shape[:-1], d_out)
