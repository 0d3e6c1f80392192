"""One weight matrix of OSFT: ``W = U_high Σ_high V_high + U_low Σ_low V_low``, the high part frozen.

Nayak et al., "Sculpting Subspaces: Constrained Full Fine-Tuning in LLMs for Continual Learning" (arXiv 2504.07097,
ICLR 2026); read in the official notebook code (Red-Hat-AI-Innovation-Team/orthogonal-subspace-learning
``notebooks/finetune_svd.py``), mini_trainer's ``osft_utils.py`` and HF PEFT's ``tuners/osf`` (reference/strategies.md
§5). Written from those descriptions, not copied.

Layout follows PEFT/mini_trainer: ``U`` is (out × r) with singular vectors as columns, ``V`` is (r × in) with singular
vectors as *rows* (``torch.linalg.svd``'s ``Vh``). The forward is ``F.linear(x, W(θ), bias)`` with ``W`` rebuilt from
the factors, so the gradient reaches ``U_low/Σ_low/V_low`` (the official notebook instead copies ``W`` into the frozen
``nn.Linear.weight`` under ``no_grad``, so its factors never receive a gradient; reference §5.2).

The rebuilt weight is ``W₀ + (U_low Σ_low V_low − P₀)``, where ``W₀`` is the layer's own weight at task start and
``P₀`` the low product at task start, as PEFT's OSF applies "original weight plus delta" (``get_delta_weight``). So
the frozen part is ``W₀ − P₀``: ``U_high Σ_high V_high`` plus whatever the rounded factors do not reproduce, and the
task starts from ``W₀`` exactly (the delta is the same product subtracted from itself), whatever the dtype. The SVD
runs in the weight's dtype, or float32 for half-precision weights, so a float64 model's split is float64-orthogonal.
A forward costs one (out × r_low)·(r_low × in) product.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def remove_left(m: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    """``m − B (Bᵀ m)``: ``m`` without its component in the column span of the orthonormal ``basis`` (out × k)."""
    return m - basis @ (basis.T @ m)


def remove_right(m: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """``m − (m Rᵀ) R``: ``m`` without its component in the row span of the orthonormal ``rows`` (k × in)."""
    return m - (m @ rows.T) @ rows


def project_weight_gradient(grad: torch.Tensor, u_high: torch.Tensor, v_high: torch.Tensor) -> torch.Tensor:
    """The paper's matrix form ``∇W − U_high (U_highᵀ ∇W V_highᵀ) V_high`` (V in row layout)."""
    return grad - u_high @ (u_high.T @ grad @ v_high.T) @ v_high


def _svd_dtype(dtype: torch.dtype) -> torch.dtype:
    """The weight's own dtype, or float32 for half precision (LAPACK has no half-precision SVD)."""
    return dtype if dtype in (torch.float32, torch.float64) else torch.float32


class OrthogonalSVDLinear(nn.Module):
    """An ``nn.Linear`` re-parameterised by its SVD: the top-``top_k`` triplets frozen, the rest trainable.

    ``bias`` is the wrapped layer's own bias parameter (shared, not copied), so training it updates the original layer.
    The original ``weight`` is not touched: :meth:`reconstruct` returns the dense weight to write back at task end.
    """

    def __init__(self, base: nn.Linear, top_k: int, *, svd_dtype: torch.dtype | None = None) -> None:
        super().__init__()
        if not isinstance(base, nn.Linear):
            raise TypeError(f"OrthogonalSVDLinear wraps an nn.Linear, got {type(base).__name__}")
        weight = base.weight.detach()
        rank = min(weight.shape)
        if not 0 <= top_k <= rank:
            raise ValueError(f"top_k must be in 0..{rank} (the smaller side of a {tuple(weight.shape)} weight), got {top_k}")
        self.in_features, self.out_features, self.top_k = base.in_features, base.out_features, top_k
        dtype = weight.dtype
        u, s, vh = torch.linalg.svd(weight.to(svd_dtype or _svd_dtype(dtype)), full_matrices=False)
        self.register_buffer("U_high", u[:, :top_k].to(dtype).contiguous())
        self.register_buffer("S_high", s[:top_k].to(dtype).contiguous())
        self.register_buffer("V_high", vh[:top_k].to(dtype).contiguous())
        self.U_low = nn.Parameter(u[:, top_k:].to(dtype).contiguous())
        self.S_low = nn.Parameter(s[top_k:].to(dtype).contiguous())
        self.V_low = nn.Parameter(vh[top_k:].to(dtype).contiguous())
        # W₀ is the wrapped layer's own tensor (not written until after_task) and P₀ the low product as the forward
        # computes it: W₀ + (P − P₀) is W₀ exactly at task start.
        self.register_buffer("W_start", weight, persistent=False)
        self.register_buffer("low_start", self._low_product().detach().clone(), persistent=False)
        if top_k == rank:  # nothing left to train in this matrix
            for p in self.low_parameters():
                p.requires_grad_(False)
        self.bias = base.bias

    @property
    def trainable_rank(self) -> int:
        return int(self.S_low.numel())

    def low_parameters(self) -> list[nn.Parameter]:
        return [self.U_low, self.S_low, self.V_low]

    def _low_product(self) -> torch.Tensor:
        return (self.U_low * self.S_low) @ self.V_low

    @property
    def frozen_weight(self) -> torch.Tensor:
        """``W₀ − P₀``: the part of the weight no gradient reaches (the top-k triplets and the SVD's remainder)."""
        return self.W_start - self.low_start

    @property
    def weight(self) -> torch.Tensor:
        """The dense weight ``W₀ + (U_low Σ_low V_low − P₀)``, differentiable in the low factors."""
        return self.W_start + (self._low_product() - self.low_start)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias)

    @torch.no_grad()
    def reconstruct(self) -> torch.Tensor:
        """The dense weight as a plain tensor (written back into the layer at task end)."""
        return self.weight.detach().clone()

    @torch.no_grad()
    def project_gradients(self) -> None:
        """``∇U_low ← ∇U_low − U_high(U_highᵀ∇U_low)``, ``∇V_low ← ∇V_low − (∇V_low V_highᵀ)V_high``; Σ_low is free."""
        if self.U_low.grad is not None:
            self.U_low.grad.copy_(remove_left(self.U_low.grad, self.U_high))
        if self.V_low.grad is not None:
            self.V_low.grad.copy_(remove_right(self.V_low.grad, self.V_high))

    @torch.no_grad()
    def project_parameters(self) -> None:
        """Re-project the low singular vectors themselves (mini_trainer PR #16): Adam's per-coordinate scaling turns a
        projected gradient into an update that leaves the orthogonal complement, so the drift is removed each step."""
        self.U_low.copy_(remove_left(self.U_low, self.U_high))
        self.V_low.copy_(remove_right(self.V_low, self.V_high))

    @torch.no_grad()
    def weight_gradient(self) -> torch.Tensor:
        """The first-order change of ``W`` the current factor gradients imply: ``dU Σ V + U dΣ V + U Σ dV``
        (what an SGD step moves ``W`` along); zero where a factor has no gradient."""
        total = torch.zeros_like(self.W_start)
        u, s, v = self.U_low, self.S_low, self.V_low
        if u.grad is not None:
            total += (u.grad * s) @ v
        if s.grad is not None:
            total += (u * s.grad) @ v
        if v.grad is not None:
            total += (u * s) @ v.grad
        return total

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, frozen_rank={self.top_k}, trainable_rank={self.trainable_rank}"
