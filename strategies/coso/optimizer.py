"""CoSOAdamW: Hugging Face-style AdamW whose CoSO groups step inside a per-step gradient subspace.

After the official ``coso/adamw.py`` and ``coso_projector.py`` (quinn-ch/CoSO; reference/strategies.md §4.1, §9.4),
written from their description. For a weight in a CoSO group with gradient ``G`` (out × in), each step:

1. ``G' = G − M Mᵀ G`` (``M``: the layer's historical basis, owned by :class:`HistoricalSubspace`);
2. every ``update_gap`` steps (and at the first), ``U, σ = svd(G')``: the projector is ``P = U[:, :r1]`` and the
   same SVD feeds the layer's Frequent Directions sketch;
3. the Adam moments live in the projected space, ``R = Pᵀ G'`` (r1 × in); they carry over when ``P`` changes and
   are not rotated (as in the official code);
4. ``W ← W − step_size · P (m / (√v + eps))``, with HF's bias correction folded into ``step_size``.

Other groups (the task heads) are plain HF AdamW: eps added to √v, decoupled weight decay applied after the update.
The optimizer state of a CoSO weight is ``P`` (out × r1) and two r1 × in moments: O(r1·d), never O(d²).

Numerical guards (no-ops in exact arithmetic on a full-rank ``G'``; the official code has neither): columns of ``U``
whose singular value is numerically zero are dropped from ``P`` (when r1 exceeds the rank of ``G'`` they are arbitrary
directions, possibly inside ``M``), and ``P`` is re-projected off ``M`` so float round-off cannot leak into it.
CoSO groups never take weight decay (the decay term is not orthogonal to ``M``; every official config has 0).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch.optim import Optimizer

from strategies.coso.subspace import HistoricalSubspace


class CoSOAdamW(Optimizer):
    """AdamW with CoSO projection for groups that carry ``subspace`` (one weight per such group).

    A CoSO group is ``{"params": [weight], "subspace": HistoricalSubspace, "proj_rank": r1, "update_gap": K}``.
    """

    def __init__(self, params: Iterable, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-6, weight_decay: float = 0.0) -> None:  # fmt: skip
        if lr < 0 or eps <= 0 or not all(0 <= b < 1 for b in betas) or weight_decay < 0:
            raise ValueError(f"invalid AdamW settings: lr={lr}, betas={betas}, eps={eps}, weight_decay={weight_decay}")
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay})
        for group in self.param_groups:
            if "subspace" in group:
                if len(group["params"]) != 1 or group["proj_rank"] < 1 or group["update_gap"] < 1:
                    raise ValueError("a CoSO group holds one weight, with proj_rank >= 1 and update_gap >= 1")
                group["weight_decay"] = 0.0

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for param in group["params"]:
                if param.grad is None:
                    continue
                self._update(param, group)
        return loss

    def _update(self, param: torch.nn.Parameter, group: dict) -> None:
        state = self.state[param]
        grad = param.grad
        subspace: HistoricalSubspace | None = group.get("subspace")
        if subspace is not None:
            grad = subspace.remove(grad)
            if "projector" not in state or state["step"] % group["update_gap"] == 0:
                state["projector"] = self._refresh(grad, subspace, group["proj_rank"])
            grad = state["projector"].T @ grad
        if "exp_avg" not in state:
            state.setdefault("step", 0)
            state["exp_avg"], state["exp_avg_sq"] = torch.zeros_like(grad), torch.zeros_like(grad)
        beta1, beta2 = group["betas"]
        state["step"] += 1
        exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
        exp_avg.mul_(beta1).add_(grad, alpha=1 - beta1)
        exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        step = state["step"]
        step_size = group["lr"] * math.sqrt(1 - beta2**step) / (1 - beta1**step)
        direction = exp_avg / (exp_avg_sq.sqrt() + group["eps"])
        if subspace is not None:
            direction = state["projector"] @ direction
        param.add_(direction.to(param.dtype), alpha=-step_size)
        if group["weight_decay"] > 0:
            param.add_(param, alpha=-group["lr"] * group["weight_decay"])

    @staticmethod
    def _refresh(grad: torch.Tensor, subspace: HistoricalSubspace, proj_rank: int) -> torch.Tensor:
        """One SVD of ``G'``: the new projector P (out × r1), and the same SVD merged into the FD sketch."""
        work = grad if grad.dtype in (torch.float32, torch.float64) else grad.float()  # no SVD in half precision
        u, s, _ = torch.linalg.svd(work, full_matrices=False)
        subspace.sketch(u, s)
        p = u[:, :proj_rank]
        tol = s[0] * max(grad.shape) * torch.finfo(s.dtype).eps
        p = p * (s[:proj_rank] > tol).to(p.dtype)  # numerically-zero directions: not a step direction
        p = subspace.remove(p)
        return p.to(grad.dtype)
