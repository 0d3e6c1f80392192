"""A Mamba block without output projection, as Mamba-FSCIL's neck builds it (``Mamba(..., use_out_proj=False)``).

Layout and initialisation transcribed from ``mmfscil/models/mamba_ssm/modules/mamba_simple.py`` of
xiaojieli0903/Mamba-FSCIL @ f253969ac3ea32a71cd3bfc242907ad69b1b0b9d (its non-fused path, the one that can return
the scan parameters): ``in_proj`` (no bias) splits into x and the gate z; x goes through a causal depthwise conv
(kernel 4) and SiLU; ``x_proj`` gives the input-dependent dt (rank ``dt_rank``), B and C (``d_state`` each);
``dt_proj`` maps dt back to the channels, its bias initialised so softplus(bias) is log-uniform in [1e-3, 0.1];
A = -exp(A_log) with the S4D-real init A[d, n] = n + 1; D = 1. The scan is :func:`scan.selective_scan`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from strategies.mamba_fscil.scan import selective_scan

DT_MIN, DT_MAX, DT_INIT_FLOOR, D_CONV = 1e-3, 0.1, 1e-4, 4


class SelectiveSSM(nn.Module):
    """(batch, L, d_model) -> output (batch, L, d_inner), gate z (batch, d_inner, L), and the scan parameters
    dt (batch, dt_rank, L), B and C (batch, d_state, L), which the class-sensitive losses read."""

    def __init__(self, d_model: int, d_state: int, dt_rank: int, expand: float = 1, chunk: int = 8) -> None:
        super().__init__()
        self.d_state, self.dt_rank, self.chunk = d_state, dt_rank, chunk
        self.d_inner = int(expand * d_model)
        self.in_proj = nn.Linear(d_model, 2 * self.d_inner, bias=False)
        self.conv1d = nn.Conv1d(self.d_inner, self.d_inner, D_CONV, groups=self.d_inner, padding=D_CONV - 1)
        self.x_proj = nn.Linear(self.d_inner, dt_rank + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(dt_rank, self.d_inner)
        bound = dt_rank**-0.5
        nn.init.uniform_(self.dt_proj.weight, -bound, bound)
        dt = torch.exp(torch.rand(self.d_inner) * (math.log(DT_MAX) - math.log(DT_MIN)) + math.log(DT_MIN))
        dt = dt.clamp(min=DT_INIT_FLOOR)
        with torch.no_grad():
            self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # inverse softplus
        self.A_log = nn.Parameter(torch.log(torch.arange(1, d_state + 1, dtype=torch.float32)).repeat(self.d_inner, 1))
        self.D = nn.Parameter(torch.ones(self.d_inner))

    def zero_gate(self) -> None:
        """Zero the rows of ``in_proj`` that produce z, so silu(z) = 0 and the block outputs 0 at first
        (MambaNeck.init_weights does this to the incremental branch)."""
        with torch.no_grad():
            self.in_proj.weight[self.d_inner :].zero_()

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, ...]]:
        length = h.shape[1]
        x, z = self.in_proj(h).transpose(1, 2).chunk(2, dim=1)  # (b, d_inner, L) each
        x = F.silu(self.conv1d(x)[..., :length])
        dt, B, C = self.x_proj(x.transpose(1, 2)).split([self.dt_rank, self.d_state, self.d_state], dim=-1)
        dt, B, C = dt.transpose(1, 2), B.transpose(1, 2), C.transpose(1, 2)  # (b, ., L)
        delta = torch.einsum("dr,brl->bdl", self.dt_proj.weight, dt)
        y = selective_scan(x, delta, -torch.exp(self.A_log.float()), B, C, self.D, z=z,
                           delta_bias=self.dt_proj.bias, delta_softplus=True, chunk=self.chunk)  # fmt: skip
        return y.transpose(1, 2), z, (dt, B, C)
