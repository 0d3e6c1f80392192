"""``AdapterLinear``: a frozen ``nn.Linear`` plus a bank of low-rank groups, computed by one fused-op call.

Each group (one per task or per expert) holds ``A`` (d_in×r) and ``B`` (r×d_out) and a scale. The forward
concatenates the live groups and makes one :func:`cl_suite.kernels.adapter_linear` call however many groups exist, so
a bank of ten adapters costs one op, not ten (the fragmentation LoRA-Switch measured). Gate modes (DESIGN.md §6):

* ``none`` — plain LoRA: every rank weighted by its group's scale (``alpha / r``).
* ``importance`` — a learned importance vector per group, shared by all tokens (CoDyRA's rank-selective LoRA).
* ``topk`` — per-token self-activation over all ranks of all groups (MoRA): ``z = x·A``, ``s = z/‖z‖``, keep the
  top-k, ``w = softmax(top-k(s)/τ)``; at inference ranks with ``s < δ`` are dropped. The router needs ``z`` before
  the op, so this mode costs one extra shrink (``x·A``) ahead of the fused call.
* ``router`` — a learned router per sample over groups (mixture of experts; mean over the sample's tokens).
* ``external`` — the gate comes from ``gate_source(x)``, a callable the owning strategy sets (a router that sits
  outside the layer: LoRA-Switch's per-token pre-gate shared by all layers, SMoRA's per-rank router, MiLoRA's
  per-prompt module router; :mod:`cl_suite.adapters.routing`). It returns a per-rank gate in any layout the op
  accepts, or None (ungated); the groups' scales multiply it.

With an input-dependent gate (``topk``, ``router``, ``external``) that has a single row (one token or one sample:
batch-1 decoding), the ranks whose gate is zero are dropped before the op, so only the chosen experts are computed
(the same output: a zero-gated rank contributes exactly zero). :meth:`AdapterLinear.switch_merge` folds one such
gate row into the base weight (LoRA-Switch's per-token merge) until :meth:`AdapterLinear.switch_unmerge`.

Groups can be frozen (still computed; with a static gate the op spends no gradient work on the leading frozen
groups), merged into the base weight (static gate modes only; the group is then gone at zero inference cost) and
pruned (dropped whole, or ranks dropped).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from cl_suite.kernels import adapter_linear

GATE_MODES = ("none", "importance", "topk", "router", "external")
STATIC_GATES = ("none", "importance")


class RankGroup(nn.Module):
    """One low-rank group: ``ΔW = scale · A diag(importance) B`` with ``A`` kaiming-uniform and ``B`` zero (LoRA).

    Random draws follow CoDyRA's ``codyra_Linear.increment_task`` (Artificer-AI-Lab/CoDyRA ``loralib/codyra.py`` @
    c1691e4): the importance vector first, ``torch.randn`` in the default dtype, then ``A`` kaiming-uniform drawn directly
    in the layer's dtype; so a seeded layer starts from the official values. ``A`` is stored transposed (in × rank).
    """

    def __init__(self, d_in: int, d_out: int, rank: int, scale: float, importance: bool,
                 dtype: torch.dtype | None = None) -> None:  # fmt: skip
        super().__init__()
        gate = torch.randn(rank) if importance else None
        a = torch.empty(rank, d_in, dtype=dtype)
        nn.init.kaiming_uniform_(a, a=math.sqrt(5))
        self.A = nn.Parameter(a.t().contiguous())
        self.B = nn.Parameter(torch.zeros(rank, d_out, dtype=dtype))
        self.importance = nn.Parameter(gate.to(a.dtype)) if gate is not None else None
        self.register_buffer("scale", torch.tensor(float(scale), dtype=a.dtype))

    @property
    def rank(self) -> int:
        return self.A.shape[1]

    @property
    def frozen(self) -> bool:
        return not self.A.requires_grad

    def static_gate(self) -> torch.Tensor:
        """The per-rank weight of a static gate mode (scale, times importance when learned)."""
        g = self.scale.expand(self.rank)
        return g * self.importance if self.importance is not None else g


class AdapterLinear(nn.Module):
    """Wraps ``base`` (kept frozen) with a bank of rank groups; see the module docstring for gate modes."""

    def __init__(self, base: nn.Linear, *, gate: str = "none", act: str = "identity", topk: int = 8,
                 temperature: float = 0.01, threshold: float = 0.0, backend: str | None = None) -> None:  # fmt: skip
        super().__init__()
        if gate not in GATE_MODES:
            raise ValueError(f"unknown gate mode {gate!r}; accepted: {', '.join(GATE_MODES)}")
        if not isinstance(base, nn.Linear):
            raise TypeError(f"AdapterLinear wraps an nn.Linear, got {type(base).__name__}")
        self.base = base
        for p in base.parameters():
            p.requires_grad_(False)
        self.gate_mode, self.act, self.backend = gate, act, backend
        self.topk, self.temperature, self.threshold = topk, temperature, threshold
        self.groups = nn.ModuleList()
        self.routers = nn.ModuleList()  # router mode: one logit per group, grown with the bank
        self.merged_groups = 0
        self.gate_source = None  # external mode: x -> per-rank gate (set by the strategy; not saved)
        self._switch_weight: torch.Tensor | None = None  # the base weight while a gate row is merged into it

    @property
    def in_features(self) -> int:
        return self.base.in_features

    @property
    def out_features(self) -> int:
        return self.base.out_features

    @property
    def weight(self) -> torch.Tensor:
        """The frozen base weight, as on the ``nn.Linear`` this replaces (open_clip reads ``c_fc.weight.dtype``)."""
        return self.base.weight

    @property
    def bias(self) -> torch.Tensor | None:
        return self.base.bias

    # -- bank management -------------------------------------------------------------------------------------
    def add_group(self, rank: int, alpha: float | None = None) -> int:
        """Append a trainable group (scale ``alpha / rank``, default 1); returns its index."""
        if rank < 1:
            raise ValueError(f"rank must be >= 1, got {rank}")
        scale = 1.0 if alpha is None else alpha / rank
        w = self.base.weight
        group = RankGroup(self.in_features, self.out_features, rank, scale, self.gate_mode == "importance", w.dtype)
        self.groups.append(group.to(device=w.device))
        if self.gate_mode == "router":
            self.routers.append(nn.Linear(self.in_features, 1).to(device=w.device, dtype=w.dtype))
        return len(self.groups) - 1

    def freeze_group(self, index: int) -> None:
        """Stop training a group; it keeps contributing (bit-identical output)."""
        for p in self.groups[index].parameters():
            p.requires_grad_(False)
        if self.gate_mode == "router":
            self.routers[index].requires_grad_(False)

    def freeze(self) -> None:
        for i in range(len(self.groups)):
            self.freeze_group(i)

    @torch.no_grad()
    def merge_groups(self, indices: list[int] | None = None) -> None:
        """Fold groups into the base weight and drop them (static gates only: the output is unchanged up to rounding)."""
        if self.gate_mode not in STATIC_GATES:
            raise ValueError(f"groups with gate mode {self.gate_mode!r} depend on the input and cannot be merged")
        indices = sorted(range(len(self.groups)) if indices is None else indices)
        for i in indices:
            g = self.groups[i]
            delta = (g.A * g.static_gate()) @ g.B  # (d_in, d_out)
            self.base.weight.add_(delta.t().to(self.base.weight.dtype))
        self.prune_groups(indices)
        self.merged_groups += len(indices)

    def prune_groups(self, indices: list[int]) -> None:
        """Drop groups whole (their contribution is removed)."""
        drop = set(indices)
        self.groups = nn.ModuleList(g for i, g in enumerate(self.groups) if i not in drop)
        if self.gate_mode == "router":
            self.routers = nn.ModuleList(r for i, r in enumerate(self.routers) if i not in drop)

    @torch.no_grad()
    def prune_ranks(self, index: int, keep: torch.Tensor) -> None:
        """Keep only the ranks of group ``index`` where ``keep`` (bool, length r) is True (e.g. zero importance)."""
        g = self.groups[index]
        keep = keep.to(torch.bool).cpu()
        if keep.numel() != g.rank:
            raise ValueError(f"keep mask has {keep.numel()} entries, group {index} has rank {g.rank}")
        if not keep.any():
            return self.prune_groups([index])
        train = not g.frozen
        g.A = nn.Parameter(g.A[:, keep].clone(), requires_grad=train)
        g.B = nn.Parameter(g.B[keep].clone(), requires_grad=train)
        if g.importance is not None:
            g.importance = nn.Parameter(g.importance[keep].clone(), requires_grad=train)
        return None

    def adapter_parameters(self, trainable_only: bool = True) -> list[nn.Parameter]:
        params = [*self.groups.parameters(), *self.routers.parameters()]
        return [p for p in params if p.requires_grad or not trainable_only]

    @property
    def rank(self) -> int:
        return sum(g.rank for g in self.groups)

    # -- forward ---------------------------------------------------------------------------------------------
    def _factors(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self._bank()[:2]

    def _bank(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """All groups' ``A``, ``B`` side by side and their per-rank scales. Without autograd this is cached until a
        group, a factor or a scale changes (decoding calls a layer once per token; re-concatenating a 10-group bank
        each time costs as much as the adapter's own products)."""
        build = lambda: (torch.cat([g.A for g in self.groups], 1), torch.cat([g.B for g in self.groups], 0),  # noqa: E731
                         torch.cat([g.scale.expand(g.rank) for g in self.groups]))  # fmt: skip
        if len(self.groups) == 1:
            g = self.groups[0]
            return g.A, g.B, g.scale.expand(g.rank)
        if torch.is_grad_enabled():
            return build()
        refs = [t for g in self.groups for t in (g.A, g.B, g.scale)]  # held by the cache: no id is reused meanwhile
        key = tuple((id(t), t._version, t.data_ptr(), t.dtype, t.shape) for t in refs)
        cached = self.__dict__.get("_bank_cache")
        if cached is None or cached[0] != key:
            cached = (key, refs, *build())
            self.__dict__["_bank_cache"] = cached
        return cached[2], cached[3], cached[4]

    def _gate(self, x: torch.Tensor, A: torch.Tensor) -> torch.Tensor | None:
        scales = self._bank()[2]
        if self.gate_mode == "none":
            return None if bool((scales == 1).all()) else scales
        if self.gate_mode == "importance":
            return torch.cat([g.static_gate() for g in self.groups])
        if self.gate_mode == "topk":
            return self._topk_gate(x, A) * scales
        if self.gate_mode == "external":
            gate = self.gate_source(x) if self.gate_source is not None else None
            return scales if gate is None else gate * scales.to(gate.dtype)
        # router: per sample (a 3-D input's tokens share their sample's mean), softmax over groups
        pooled = x.mean(dim=1) if x.dim() == 3 else x.reshape(-1, x.shape[-1])
        weights = torch.softmax(torch.cat([r(pooled) for r in self.routers], -1), -1)
        ranks = torch.tensor([g.rank for g in self.groups], device=x.device)
        return weights.repeat_interleave(ranks, dim=-1) * scales

    def _topk_gate(self, x: torch.Tensor, A: torch.Tensor) -> torch.Tensor:
        """MoRA's self-activation: sparse softmax over the top-k normalised projections, per token."""
        z = x @ A
        s = F.normalize(z, dim=-1)
        k = min(max(self.topk, 2), z.shape[-1])
        top, idx = s.topk(k, dim=-1)
        w = torch.zeros_like(s).scatter(-1, idx, torch.softmax(top / self.temperature, -1))
        if not self.training and self.threshold > 0:
            w = w * (s >= self.threshold)
        return w

    def gate_weights(self, x: torch.Tensor) -> torch.Tensor | None:
        """The per-rank gate the forward applies to ``x`` (None: ungated), e.g. to count MoRA's active atoms."""
        if not self.groups:
            return None
        return self._gate(x, self._factors()[0])

    def frozen_prefix(self) -> int:
        """Ranks of the leading groups that need no gradient, handed to the op so it spends no gradient work on
        them. Zero for input-dependent gates (top-k, router): there every rank's gate depends on trainable ranks."""
        if self.gate_mode not in STATIC_GATES:
            return 0
        ranks = 0
        for g in self.groups:
            if any(p.requires_grad for p in g.parameters()):
                break
            ranks += g.rank
        return ranks

    def _rows_of_A(self, A: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """``A[:, keep]ᵀ`` as contiguous rows: without autograd from a cached ``Aᵀ`` (a row gather, not a strided
        column gather: at batch-1 decoding the gather otherwise costs more than the adapter's products)."""
        if torch.is_grad_enabled():
            return A.t().index_select(0, keep)
        key = (A._version, A.data_ptr(), A.shape)
        cached = self.__dict__.get("_At_cache")
        if cached is None or cached[0] is not A or cached[1] != key:
            cached = (A, key, A.t().contiguous())
            self.__dict__["_At_cache"] = cached
        return cached[2].index_select(0, keep)

    @torch.no_grad()
    def delta_weight(self, gate: torch.Tensor) -> torch.Tensor:
        """``Σ_i gate_i · B_i A_i`` as a (d_out, d_in) matrix for one gate row over all ranks (scales included)."""
        A, B = self._factors()
        keep = gate.reshape(-1).nonzero().squeeze(-1)
        return ((A[:, keep] * gate.reshape(-1)[keep].to(A.dtype)) @ B[keep]).t()

    @torch.no_grad()
    def switch_merge(self, gate: torch.Tensor) -> None:
        """LoRA-Switch's switch: ``W ← W0 + ΔW(gate)`` for one gate row (the base weight is kept and restored by
        :meth:`switch_unmerge`, so repeated switches do not drift); until then the forward is the bare linear."""
        if self._switch_weight is None:
            self._switch_weight = self.base.weight.detach().clone()
        A, B = self._factors()
        keep = gate.reshape(-1).nonzero().squeeze(-1)
        scaled = (A[:, keep] * gate.reshape(-1)[keep].to(A.dtype)).t()  # (k, d_in)
        torch.addmm(self._switch_weight, B[keep].t(), scaled, out=self.base.weight.data)

    @torch.no_grad()
    def switch_unmerge(self) -> None:
        if self._switch_weight is not None:
            self.base.weight.data.copy_(self._switch_weight)
            self._switch_weight = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.groups or self._switch_weight is not None:
            return self.base(x)
        A, B = self._factors()
        gate = self._gate(x, A)
        if gate is not None and self.gate_mode not in STATIC_GATES and gate.numel() == gate.shape[-1]:
            keep = gate.reshape(-1).nonzero().squeeze(-1)  # one row: compute only the chosen ranks
            if keep.numel() == 0:
                return self.base(x)
            if keep.numel() < gate.shape[-1]:
                A, B, gate = self._rows_of_A(A, keep).t(), B.index_select(0, keep), gate.index_select(-1, keep)
        return adapter_linear(x, A, B, gate, weight=self.base.weight, bias=self.base.bias, act=self.act,
                              frozen_ranks=self.frozen_prefix(), backend=self.backend)  # fmt: skip

    def extra_repr(self) -> str:
        return (f"{self.in_features}->{self.out_features}, gate={self.gate_mode}, groups={len(self.groups)}, "
                f"rank={self.rank}, merged={self.merged_groups}")  # fmt: skip


def bank_parameters(layers: Iterable[AdapterLinear], trainable_only: bool = True) -> list[nn.Parameter]:
    """The adapter parameters of several layers (frozen ones too with ``trainable_only=False``: what the bank adds
    to the model at inference)."""
    return [p for layer in layers for p in layer.adapter_parameters(trainable_only)]
