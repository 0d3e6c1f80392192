"""A mixture of bottleneck adapters (down → act → up per expert, weighted by a per-sample router) on the fused op.

The experts' down-projections are concatenated into one ``A`` (d_in × E·r) with their biases, their up-projections
into one ``B`` (E·r × d_out); the router's weight for expert e gates that expert's r columns. So the whole mixture is
one adapter-only op call (``weight=None``): ``Σ_e g_e · up_e(act(down_e x))``. The experts' up-biases are weighted
by the same router outside the op (``g @ C``, an E × d_out product, tiny). This is the adapter form of SEMA's
mixture (reference/strategies.md §1); expansion and novelty detection belong to the strategy, not to this layer.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from cl_suite.kernels import adapter_linear


class BottleneckExpert(nn.Module):
    def __init__(self, d_in: int, d_out: int, bottleneck: int) -> None:
        super().__init__()
        down = torch.empty(bottleneck, d_in)
        nn.init.kaiming_uniform_(down, a=math.sqrt(5))
        self.down = nn.Parameter(down.t().contiguous())  # (d_in, r): the op's layout
        self.down_bias = nn.Parameter(torch.zeros(bottleneck))
        self.up = nn.Parameter(torch.zeros(bottleneck, d_out))  # zero: a new expert starts as a no-op
        self.up_bias = nn.Parameter(torch.zeros(d_out))


class AdapterMixture(nn.Module):
    """``forward(x)`` returns the mixture's output (to be added to a block's output by the caller's hook)."""

    def __init__(self, d_in: int, d_out: int, bottleneck: int = 16, act: str = "relu",
                 backend: str | None = None) -> None:  # fmt: skip
        super().__init__()
        self.d_in, self.d_out, self.bottleneck, self.act, self.backend = d_in, d_out, bottleneck, act, backend
        self.experts = nn.ModuleList()
        self.router = nn.ModuleList()  # one logit per expert, grown with the mixture

    def add_expert(self) -> int:
        ref = next(self.parameters(), None)
        kw = {"device": ref.device, "dtype": ref.dtype} if ref is not None else {}
        self.experts.append(BottleneckExpert(self.d_in, self.d_out, self.bottleneck).to(**kw))
        self.router.append(nn.Linear(self.d_in, 1).to(**kw))
        return len(self.experts) - 1

    def freeze_expert(self, index: int) -> None:
        self.experts[index].requires_grad_(False)
        self.router[index].requires_grad_(False)

    def routing(self, x: torch.Tensor) -> torch.Tensor:
        """Per-sample softmax weights over experts, (S, E): a 3-D input is pooled over its tokens."""
        pooled = x.mean(dim=1) if x.dim() == 3 else x
        return torch.softmax(torch.cat([r(pooled) for r in self.router], -1), -1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.experts:
            return x.new_zeros(*x.shape[:-1], self.d_out)
        weights = self.routing(x)
        A = torch.cat([e.down for e in self.experts], 1)
        B = torch.cat([e.up for e in self.experts], 0)
        down_bias = torch.cat([e.down_bias for e in self.experts])
        gate = weights.repeat_interleave(self.bottleneck, dim=-1)
        y = adapter_linear(x, A, B, gate, act=self.act, down_bias=down_bias, backend=self.backend)
        up_bias = weights @ torch.stack([e.up_bias for e in self.experts])  # (S, d_out)
        return y + (up_bias.unsqueeze(1) if x.dim() == 3 else up_bias)
