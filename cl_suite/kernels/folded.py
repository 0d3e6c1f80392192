"""The PyTorch path for many tokens: fold the adapter into the weight, then one GEMM.

With the identity activation and a gate shared by every token (plain LoRA banks, CoDyRA's importance vector) the op
is a linear layer with the weight ``W + (A·diag(g)·B)ᵀ``. Forming that weight costs ``d_in·R·d_out`` multiply-adds;
the unfused adapter costs ``N·R·(d_in + d_out)``; so past ``N ≈ d_in·d_out / (d_in + d_out)`` tokens (384 at
d = 768) folding is cheaper, and the forward costs about one frozen linear however many groups are live.

The backward is written by hand: letting autograd differentiate the folded weight would form ``dW = dyᵀ·x``, a full
d_out×d_in GEMM. Here ``dx = dy·W_folded`` (one GEMM, as for the frozen layer) and the adapter gradients come from
four tall-skinny products (``u = dy·Bᵀ``, ``dA = xᵀ(u ⊙ g)``, ``h = x·A``, ``dB = (h ⊙ g)ᵀ·dy``).

Only float32/float64 weights are folded: in fp16/bf16 a small ΔW added to W would round away.
The same trick is what ``AdapterLinear.merge_groups`` does once and for all; this does it per call, so the groups
stay separate parameters that keep training.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from cl_suite.kernels.reference import pad_frozen


def fold_pays(x: torch.Tensor, A: torch.Tensor, B: torch.Tensor, gate_rows: torch.Tensor | None, weight, act: str,
              down_bias) -> bool:  # fmt: skip
    """Whether the folded path applies and is cheaper: identity act, no gate or one gate row shared by all tokens
    (``gate_rows`` as :func:`cl_suite.kernels.reference.gate_layout` returns it), a base weight in full precision, no
    down-projection bias, and enough tokens to amortise forming the weight."""
    shared = gate_rows is None or gate_rows.shape[0] == 1
    if weight is None or act != "identity" or down_bias is not None or not shared:
        return False
    if weight.dtype not in (torch.float32, torch.float64):
        return False
    d_in, d_out = A.shape[0], B.shape[1]
    tokens = x.numel() // max(d_in, 1)
    return tokens * (d_in + d_out) > d_in * d_out


def _folded_weight(weight: torch.Tensor, A: torch.Tensor, B: torch.Tensor, g: torch.Tensor | None) -> torch.Tensor:
    gB = B if g is None else g.to(B.dtype)[:, None] * B
    return torch.addmm(weight, gB.t(), A.t())  # (d_out, d_in)


class FoldedAdapter(torch.autograd.Function):
    """``y = x2·(W + (A·diag(g)·B)ᵀ)ᵀ + bias`` with the hand-written backward of the module docstring; the first
    ``frozen_ranks`` ranks are folded in but get no gradient work (their gradient slots are zeros)."""

    @staticmethod
    def forward(ctx, x2, weight, bias, A, B, g, frozen_ranks):
        ctx.save_for_backward(x2, weight, A, B, g)
        ctx.frozen_ranks = frozen_ranks
        return F.linear(x2, _folded_weight(weight, A, B, g), bias)

    @staticmethod
    def backward(ctx, dy):
        x2, weight, A, B, g = ctx.saved_tensors
        k = ctx.frozen_ranks
        need_x, need_w, need_bias, need_a, need_b, need_g, _ = ctx.needs_input_grad
        dx = dw = dbias = dA = dB = dg = None
        if need_x:
            dx = dy @ _folded_weight(weight, A, B, g)
        if need_w:
            dw = dy.t() @ x2
        if need_bias:
            dbias = dy.sum(0)
        At, Bt, gt = A[:, k:], B[k:], None if g is None else g[k:]  # the ranks that train
        if need_a or need_g:
            u = dy @ Bt.t()  # (N, R - k)
            if need_a:
                dA = pad_frozen(x2.t() @ (u if gt is None else u * gt), k, 1)
        if need_b or need_g:
            h = x2 @ At
            if need_b:
                dB = pad_frozen((h if gt is None else h * gt).t() @ dy, k, 0)
            if need_g:
                dg = pad_frozen((h * u).sum(0), k, 0)
        return dx, dw, dbias, dA, dB, dg, None


def adapter_linear_folded(x: torch.Tensor, A: torch.Tensor, B: torch.Tensor, g: torch.Tensor | None,
                          weight: torch.Tensor, bias: torch.Tensor | None, up_bias: torch.Tensor | None,
                          frozen_ranks: int = 0) -> torch.Tensor:  # fmt: skip
    """The op through the folded weight; ``g`` is ``(R,)`` or None. Callers check :func:`fold_pays` first."""
    if not 0 <= frozen_ranks <= A.shape[1]:
        raise ValueError(f"frozen_ranks must be in [0, {A.shape[1]}], got {frozen_ranks}")
    if up_bias is not None:
        bias = up_bias if bias is None else bias + up_bias
    y = FoldedAdapter.apply(x.reshape(-1, x.shape[-1]), weight, bias, A, B, g, frozen_ranks)
    return y.view(*x.shape[:-1], B.shape[1])
