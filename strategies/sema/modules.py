"""SEMA's per-block pieces: the representation descriptor with its error buffer, the z-score rule, and the layer
(a mixture of functional adapters on the shared :class:`cl_suite.adapters.AdapterMixture`, plus descriptors).

Behaviour follows the official code (huiyiwang01/SEMA-CL, ``backbone/sema_components.py`` and
``backbone/sema_block.py``; reference/strategies.md §1 and §9.1), reimplemented here:

* descriptor: a linear auto-encoder ``d → rd_dim → d`` (no nonlinearity; weights kaiming-uniform, biases zero) on the
  token mean of the block input; its error is the per-sample MSE.
* error buffer: at most ``size`` values; while filling, the part of a pushed chunk that does not fit is dropped;
  once full it is a FIFO. Mean and unbiased variance of the held values; z is 0 while it holds 2 values or fewer.
  Only training-mode errors are recorded, until the descriptor is frozen.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from cl_suite.adapters import AdapterMixture


class Descriptor(nn.Module):
    """Representation descriptor: a linear auto-encoder on the token mean plus the buffer of its recent errors."""

    def __init__(self, width: int, hidden: int, buffer_size: int) -> None:
        super().__init__()
        self.encoder, self.decoder = nn.Linear(width, hidden), nn.Linear(hidden, width)
        for lin in (self.encoder, self.decoder):
            nn.init.kaiming_uniform_(lin.weight, a=math.sqrt(5))
            nn.init.zeros_(lin.bias)
        self.register_buffer("errors", torch.zeros(buffer_size))
        self.register_buffer("count", torch.zeros((), dtype=torch.long))
        self.register_buffer("updating", torch.ones((), dtype=torch.bool))  # False once frozen

    def error(self, pooled: torch.Tensor) -> torch.Tensor:
        """Per-sample reconstruction MSE of ``pooled`` (S, d) -> (S,)."""
        return (self.decoder(self.encoder(pooled)) - pooled).pow(2).mean(-1)

    @torch.no_grad()
    def record(self, errors: torch.Tensor) -> None:
        """Push a chunk of errors (the official buffer's semantics; see the module docstring)."""
        if not bool(self.updating):
            return
        v = errors.detach().flatten().to(self.errors)
        size, n = self.errors.numel(), int(self.count)
        if n < size:
            take = min(size - n, v.numel())
            self.errors[n : n + take] = v[:take]
            self.count.fill_(n + take)
        elif v.numel() >= size:
            self.errors.copy_(v[-size:])
        else:
            self.errors.copy_(torch.cat([self.errors[v.numel() :], v]))

    def stats(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(mean, std) of the held errors, or None while it holds 2 values or fewer."""
        n = int(self.count)
        if n <= 2:
            return None
        held = self.errors[:n]
        return held.mean(), held.var(unbiased=True).sqrt()

    def zscore(self, errors: torch.Tensor) -> torch.Tensor:
        """Signed z-scores of ``errors`` against the buffer (zeros while the buffer holds 2 values or fewer)."""
        stats = self.stats()
        if stats is None:
            return torch.zeros_like(errors)
        mean, std = stats
        return (errors - mean) / std

    def freeze(self) -> None:
        self.requires_grad_(False)
        self.updating.fill_(False)


def should_expand(z: torch.Tensor, threshold: float, variant: str) -> tuple[bool, float]:
    """Expansion rule on z-scores ``z`` (K adapters × S samples) at one layer; returns (expand?, statistic).

    ``code`` (official): the statistic is ``min_k mean_s |z_k,s|`` and the layer expands when it is strictly above the
    threshold (one adapter that recognises the data blocks expansion; an unusually low error also counts).
    ``paper``: a sample is novel when every signed ``z_k,s`` is above the threshold; the statistic is the novel
    fraction of the batch and the layer expands when it is above 1/2 (the paper gives the per-sample rule only; the
    majority vote over the batch is our reading).
    """
    if variant == "code":
        stat = float(z.abs().mean(dim=1).min())
        return stat > threshold, stat
    novel = (z > threshold).all(dim=0).float().mean()
    return float(novel) > 0.5, float(novel)


class SemaLayer(nn.Module):
    """The SEMA module of one transformer block: adapters mixed by a router, and (if expandable) descriptors."""

    def __init__(self, block_index: int, width: int, bottleneck: int, rd_dim: int, buffer_size: int,
                 expandable: bool, backend: str | None) -> None:  # fmt: skip
        super().__init__()
        self.block_index, self.width, self.expandable = block_index, width, expandable
        self.rd_dim, self.buffer_size = rd_dim, buffer_size
        self.mixture = AdapterMixture(width, width, bottleneck=bottleneck, act="relu", backend=backend)
        self.descriptors = nn.ModuleList()
        self.added_this_task = False

    @property
    def num_adapters(self) -> int:
        return len(self.mixture.experts)

    def add_adapter(self) -> None:
        """A new functional adapter (zero output), its router column and, in an expandable layer, its descriptor."""
        self.mixture.add_expert()
        if self.expandable:
            ref = self.mixture.experts[-1].up
            self.descriptors.append(Descriptor(self.width, self.rd_dim, self.buffer_size).to(ref.device, ref.dtype))

    def freeze(self) -> None:
        for i in range(self.num_adapters):
            self.mixture.freeze_expert(i)
        for d in self.descriptors:
            d.freeze()

    def newest_parameters(self) -> list[nn.Parameter]:
        """Trainable parameters of the newest adapter and, where a router mixes several adapters, its column."""
        i = self.num_adapters - 1
        params = list(self.mixture.experts[i].parameters())
        if self.expandable:  # a lone adapter's softmax weight is 1: outside the expandable range the router is unused
            params += list(self.mixture.router[i].parameters())
        return [p for p in params if p.requires_grad]

    def inference_parameters(self) -> int:
        n = sum(p.numel() for p in self.mixture.experts.parameters())
        return n + (sum(p.numel() for p in self.mixture.router.parameters()) if self.expandable else 0)
