"""Routers that sit outside an :class:`AdapterLinear` and feed its ``external`` gate mode (one fused op per layer).

Three routing rules, each from its paper (the strategies in ``strategies/`` add the continual-learning framing, the
benchmark in :mod:`cl_suite.adapters.bench_decode` times them):

* :class:`TokenPreGate` — LoRA-Switch (Kong et al., arXiv 2405.17741): one top-k router over N LoRA experts runs per
  token at the **first** block of a stack; every adapted layer of the stack uses that token's choice.
* :class:`RankRouter` — SMoRA (Zhao et al., arXiv 2501.15103, KDD 2026): every rank is an expert; a per-layer,
  per-token router ``sigmoid(x·W_g) + b`` picks the top-k ranks; ``b`` is the auxiliary-loss-free balancing bias.
  Transcribed from the official ``StyxXuan/smora`` ``packages/peft/src/peft/tuners/srmole/layer.py`` @ 8bdabcd.
* :class:`PromptRouter` — MiLoRA (Zhang et al., EMNLP 2024 Findings, arXiv 2410.18035): per block, the LoRA modules
  (q, k, v, o, gate, up, down) are the experts; the router pools the block's input over the prompt, computes
  ``TopK(softmax(g(h)·W_r))`` once per prompt, and the choice is reused for every generated token.

Each router grows per task (``grow``: new output rows; earlier rows can be frozen) so the bank it routes over can grow.
All inputs are batch-first ``(B, L, d)`` (transformers LMs, open_clip with ``batch_first``, the tiny ViT).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from cl_suite.adapters.linear import AdapterLinear


def expand_to_ranks(weights: torch.Tensor, ranks: list[int]) -> torch.Tensor:
    """A gate over groups ``(..., G)`` as a gate over their ranks ``(..., Σ ranks)``."""
    if len(set(ranks)) == 1:
        return weights.repeat_interleave(ranks[0], dim=-1)
    return weights.repeat_interleave(torch.tensor(ranks, device=weights.device), dim=-1)


def fit_gate(gate: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``gate`` (per token ``(B, L, R)`` or per sample ``(B, R)``) in a layout the op accepts for input ``x``."""
    lead = tuple(x.shape[:-1])
    if tuple(gate.shape[:-1]) == lead or (gate.dim() == 2 and len(lead) >= 2 and lead[0] == gate.shape[0]):
        return gate
    flat = gate.reshape(-1, gate.shape[-1])
    rows = 1
    for s in lead:
        rows *= s
    if flat.shape[0] == rows:
        return flat.reshape(*lead, gate.shape[-1])
    if gate.dim() == 2 and rows % gate.shape[0] == 0:  # per sample, x flattened to (B*L, d)
        return gate.repeat_interleave(rows // gate.shape[0], dim=0).reshape(*lead, gate.shape[-1])
    raise ValueError(f"routing of shape {tuple(gate.shape)} does not fit a layer input of shape {tuple(x.shape)}")


def top_k_mask(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Boolean mask of the ``k`` largest entries along the last dim."""
    idx = scores.topk(min(k, scores.shape[-1]), dim=-1).indices
    return torch.zeros_like(scores, dtype=torch.bool).scatter(-1, idx, True)


class GrowingLinear(nn.Module):
    """A bias-free ``d -> Σ outputs`` linear made of one block per task, so earlier tasks' rows can be frozen."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.d = d
        self.parts = nn.ModuleList()

    def grow(self, outputs: int, like: torch.Tensor | None = None) -> None:
        lin = nn.Linear(self.d, outputs, bias=False)
        if like is not None:
            lin = lin.to(device=like.device, dtype=like.dtype)
        self.parts.append(lin)

    def freeze(self) -> None:
        self.parts.requires_grad_(False)

    @property
    def outputs(self) -> int:
        return sum(p.out_features for p in self.parts)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if len(self.parts) == 1:
            return self.parts[0](x)
        return F.linear(x, torch.cat([p.weight for p in self.parts], 0))


# -- LoRA-Switch -----------------------------------------------------------------------------------------------
class TokenPreGate(nn.Module):
    """LoRA-Switch's token-wise router: top-k over all experts, computed once per token from the first block's input.

    The weights of the chosen experts are the softmax over their logits (the paper's text gives top-2 routing but
    not the weighting; softmax over the top-k logits is the Mixtral/MoLA convention and is an assumption here)."""

    def __init__(self, d: int, topk: int = 2) -> None:
        super().__init__()
        self.router = GrowingLinear(d)
        self.topk = topk

    def grow(self, experts: int, like: torch.Tensor | None = None) -> None:
        self.router.grow(experts, like)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """Per-token expert weights ``(..., E)`` with exactly ``min(k, E)`` non-zeros per token."""
        logits = self.router(h)
        mask = top_k_mask(logits, self.topk)
        return torch.softmax(logits.masked_fill(~mask, float("-inf")), -1)


# -- SMoRA ---------------------------------------------------------------------------------------------------------
class RankRouter(nn.Module):
    """SMoRA's per-token router over the ranks of one layer (official ``SRMoLELinear.forward``):

    ``p = sigmoid(x·W_g) + b`` (``W_g`` bias-free, ``b`` a non-trained buffer); keep the top-k of ``p``;
    ``g = k · p_topk / Σ p_topk`` (the biased scores, as the official code does); in training
    ``b ← b + u · sign(mean_count − count)`` per rank after each forward (``u`` = 1e-5, the code's
    ``bias_update_rate``). ``trainable_from``: only ranks from this index on get bias updates (the current task's
    ranks in the continual framing; 0 = all, the official behaviour)."""

    def __init__(self, d: int, topk: int = 8, update_rate: float = 1e-5) -> None:
        super().__init__()
        self.router = GrowingLinear(d)
        self.topk, self.update_rate = topk, update_rate
        self.register_buffer("bias", torch.zeros(0))
        self.trainable_from = 0

    def grow(self, ranks: int, like: torch.Tensor | None = None) -> None:
        self.router.grow(ranks, like)
        self.bias = torch.cat([self.bias, self.bias.new_zeros(ranks)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scores = torch.sigmoid(self.router(x)) + self.bias.to(x.dtype)
        k = min(self.topk, scores.shape[-1])
        top, idx = scores.topk(k, dim=-1)
        if self.training:
            with torch.no_grad():
                counts = torch.bincount(idx.reshape(-1), minlength=scores.shape[-1]).float()
                step = self.update_rate * (counts.mean() - counts).sign()
                self.bias[self.trainable_from :] += step[self.trainable_from :].to(self.bias.dtype)
        weights = top / top.sum(-1, keepdim=True) * k
        return torch.zeros_like(scores).scatter(-1, idx, weights)


# -- MiLoRA --------------------------------------------------------------------------------------------------------
class AttentionPooler(nn.Module):
    """Self-attention pooling over the prompt's tokens: ``h = Σ_t softmax_t(H_t·w) H_t`` (masked). The paper's
    Appendix C form was not available; this one-vector attention pooling is an assumption."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.score = nn.Linear(d, 1, bias=False)
        nn.init.zeros_(self.score.weight)  # starts as mean pooling

    def forward(self, H: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        s = self.score(H).squeeze(-1)
        if mask is not None:
            s = s.masked_fill(~mask, float("-inf"))
        return (torch.softmax(s, -1).unsqueeze(-1) * H).sum(1)


class PromptRouter(nn.Module):
    """MiLoRA's router for one block: ``R = TopK(softmax(g(Pooler(H))·W_r))`` (Eq. 2-3), per prompt.

    ``g`` is GeLU (the paper learns a rational activation, GeLU-initialised, by DARTS bi-level optimisation; that is
    simplified away). The gate of the chosen experts is their probability (Eq. 3's sparse vector)."""

    def __init__(self, d: int, topk: int = 3, pooler: str = "attention") -> None:
        super().__init__()
        self.pooler = AttentionPooler(d) if pooler == "attention" else None
        self.pool_kind = pooler
        self.router = GrowingLinear(d)
        self.topk = topk

    def grow(self, experts: int, like: torch.Tensor | None = None) -> None:
        self.router.grow(experts, like)
        if self.pooler is not None and like is not None:
            self.pooler.to(device=like.device, dtype=like.dtype)

    def pool(self, H: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        if self.pool_kind == "attention":
            return self.pooler(H, mask)
        if self.pool_kind == "last":
            if mask is None:
                return H[:, -1]
            last = mask.long().cumsum(1).argmax(1)  # the last prompt position
            return H[torch.arange(H.shape[0], device=H.device), last]
        m = torch.ones(H.shape[:2], dtype=torch.bool, device=H.device) if mask is None else mask
        return (H * m.unsqueeze(-1)).sum(1) / m.sum(1, keepdim=True).clamp_min(1)

    def forward(self, H: torch.Tensor, mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(gate, probs)``: the sparse top-k probabilities (B, E) and the full softmax (B, E)."""
        probs = torch.softmax(self.router(F.gelu(self.pool(H, mask))), -1)
        return probs * top_k_mask(probs, self.topk), probs


def load_balance_loss(probs: torch.Tensor) -> torch.Tensor:
    """Switch-Transformer load balancing as MiLoRA writes it (Eq. 4-5): ``N · Σ_i f_i p̂_i`` with ``f_i`` the share of
    prompts whose argmax is expert i and ``p̂_i`` the mean probability of expert i over the batch."""
    n = probs.shape[-1]
    f = F.one_hot(probs.argmax(-1), n).to(probs.dtype).mean(0)
    return n * (f * probs.mean(0)).sum()


# -- where routers read and write ----------------------------------------------------------------------------
def block_stacks(model: nn.Module, blocks: list[nn.Module]) -> list[list[tuple[str, nn.Module]]]:
    """The blocks grouped by the container that holds them (one stack per tower: CLIP's vision and text towers are
    two), each as (dotted name, block) in order."""
    names = {id(m): n for n, m in model.named_modules()}
    stacks: dict[str, list[tuple[str, nn.Module]]] = {}
    for b in blocks:
        name = names[id(b)]
        stacks.setdefault(name.rpartition(".")[0], []).append((name, b))
    return list(stacks.values())


def layers_of(block_name: str, layers: dict[str, AdapterLinear]) -> dict[str, AdapterLinear]:
    return {n: layer for n, layer in layers.items() if n.startswith(block_name + ".")}


def hidden_of(args: tuple, kwargs: dict) -> torch.Tensor:
    """A block's input hidden state from its forward arguments (transformers passes it by keyword)."""
    return args[0] if args else kwargs.get("hidden_states", next(iter(kwargs.values())))


def group_source(layer: AdapterLinear, read: Callable[[], torch.Tensor | None]) -> Callable[[torch.Tensor], torch.Tensor]:
    """A ``gate_source`` that reads a gate over the layer's groups (per token or sample) and spreads it to ranks."""

    def source(x: torch.Tensor) -> torch.Tensor | None:
        gate = read()
        if gate is None:
            return None
        return fit_gate(expand_to_ranks(gate, [g.rank for g in layer.groups]), x)

    return source


def _scales(layer: AdapterLinear) -> torch.Tensor:
    return layer._bank()[2]


class SwitchBinding:
    """Wires one :class:`TokenPreGate` per stack of blocks to that stack's adapted layers (LoRA-Switch).

    Expert ``e`` is group ``e`` of every adapted layer of the stack. A forward pre-hook on the stack's first block
    routes each token once; every layer reads that routing. ``merge=True``: when the routing is a single row (batch-1
    decoding, one token) outside training, the chosen experts are merged into each layer's weight for that step
    (:meth:`AdapterLinear.switch_merge`, from the kept base weight) and the layers run as bare linears; the merge is
    undone by the next routing, or by :meth:`unmerge`."""

    def __init__(self, model: nn.Module, blocks: list, layers: dict[str, AdapterLinear], topk: int = 2,
                 merge: bool = False) -> None:  # fmt: skip
        self.merge = merge
        self.stacks = []  # (first block, pre-gate, {name: layer})
        self.gates = nn.ModuleList()
        norms = {id(b.block): b.norm for b in blocks}
        for stack in block_stacks(model, [b.block for b in blocks]):
            mine = {n: layer for name, _ in stack for n, layer in layers_of(name, layers).items()}
            if not mine:
                continue
            d = norms[id(stack[0][1])].weight.shape[0]
            gate = TokenPreGate(d, topk)
            self.gates.append(gate)
            self.stacks.append((stack[0][1], gate, mine))
        self.routing: list[torch.Tensor | None] = [None] * len(self.stacks)
        self._hooks: list = []

    def grow(self, experts: int) -> None:
        for _, gate, mine in self.stacks:
            gate.grow(experts, next(iter(mine.values())).base.weight)

    def attach(self) -> None:
        for i, (first, _, mine) in enumerate(self.stacks):
            for layer in mine.values():
                layer.gate_source = group_source(layer, lambda i=i: self.routing[i])
            self._hooks.append(first.register_forward_pre_hook(self._route(i), with_kwargs=True))

    def detach(self) -> None:
        self.unmerge()
        for h in self._hooks:
            h.remove()
        self._hooks = []
        for _, _, mine in self.stacks:
            for layer in mine.values():
                layer.gate_source = None

    def unmerge(self) -> None:
        for _, _, mine in self.stacks:
            for layer in mine.values():
                layer.switch_unmerge()

    def _route(self, i: int):
        _, gate, mine = self.stacks[i]

        def hook(module, args, kwargs):
            weights = gate(hidden_of(args, kwargs))
            self.routing[i] = weights
            if self.merge and not module.training and weights.numel() == weights.shape[-1]:
                for layer in mine.values():
                    layer.switch_merge(expand_to_ranks(weights.reshape(-1), [g.rank for g in layer.groups])
                                       * _scales(layer))  # fmt: skip
            else:
                for layer in mine.values():
                    layer.switch_unmerge()

        return hook


class PromptBinding:
    """Wires one :class:`PromptRouter` per block to that block's adapted layers (MiLoRA).

    The experts of a block are its adapted layers' groups, ordered (task, module): after T tasks with M modules the
    router has T·M outputs and layer j's groups take columns j, M + j, ... A forward pre-hook on each block routes
    from the block's input, pooled over the prompt; when ``watch`` (the LM) sees a single new position with a
    routing already in place (a decode step with a KV cache), the routing is reused, not recomputed. The prompt mask
    is the LM's ``attention_mask``, minus the answer positions when ``labels`` are given (training)."""

    def __init__(self, blocks: list, layers: dict[str, AdapterLinear], topk: int = 3, pooler: str = "attention",
                 model: nn.Module | None = None, watch: nn.Module | None = None) -> None:  # fmt: skip
        self.blocks = []  # (block, router, [layers in module order])
        self.routers = nn.ModuleList()
        names = {id(m): n for n, m in model.named_modules()} if model is not None else {}
        for b in blocks:
            name = names.get(id(b.block))
            mine = [layer for _, layer in sorted(layers_of(name, layers).items())] if name else []
            if not mine:
                continue
            router = PromptRouter(b.norm.weight.shape[0], topk, pooler)
            self.routers.append(router)
            self.blocks.append((b.block, router, mine))
        self.watch = watch
        self.routing: list[torch.Tensor | None] = [None] * len(self.blocks)
        self.probs: list[torch.Tensor | None] = [None] * len(self.blocks)
        self.prompt_mask: torch.Tensor | None = None
        self.reuse = False
        self.history: list[list[torch.Tensor]] | None = None  # set to [] to record every block's routing per forward
        self._hooks: list = []

    @property
    def modules_per_block(self) -> int:
        return len(self.blocks[0][2]) if self.blocks else 0

    def grow(self) -> None:
        for _, router, mine in self.blocks:
            router.grow(len(mine), mine[0].base.weight)

    def attach(self) -> None:
        for i, (block, _, mine) in enumerate(self.blocks):
            m = len(mine)
            for j, layer in enumerate(mine):
                layer.gate_source = group_source(layer, lambda i=i, j=j, m=m: self._columns(i, j, m))
            self._hooks.append(block.register_forward_pre_hook(self._route(i), with_kwargs=True))
        if self.watch is not None:
            self._hooks.append(self.watch.register_forward_pre_hook(self._see_inputs, with_kwargs=True))

    def detach(self) -> None:
        for h in self._hooks:
            h.remove()
        self._hooks = []
        for _, _, mine in self.blocks:
            for layer in mine:
                layer.gate_source = None

    def _columns(self, i: int, j: int, m: int) -> torch.Tensor | None:
        gate = self.routing[i]
        return None if gate is None else gate[:, j::m]

    def _see_inputs(self, module, args, kwargs) -> None:
        ids = kwargs.get("input_ids", args[0] if args else None)
        mask = kwargs.get("attention_mask")
        have = self.routing[0] is not None and ids is not None and self.routing[0].shape[0] == ids.shape[0]
        self.reuse = ids is not None and ids.shape[1] == 1 and have and not module.training
        if self.history is not None:
            self.history.append([])
        if self.reuse:
            return
        prompt = None if mask is None or mask.dim() != 2 else mask.bool()
        labels = kwargs.get("labels")
        if prompt is not None and labels is not None:
            prompt = prompt & (labels == -100)
        self.prompt_mask = prompt

    def _route(self, i: int):
        _, router, _ = self.blocks[i]

        def hook(module, args, kwargs):
            if not self.reuse:
                H = hidden_of(args, kwargs)
                mask = self.prompt_mask
                if mask is not None and tuple(mask.shape) != tuple(H.shape[:2]):
                    mask = None
                self.routing[i], self.probs[i] = router(H, mask)
            if self.history is not None and self.history:
                self.history[-1].append(self.routing[i].detach().clone())

        return hook

    def balance_loss(self) -> torch.Tensor | None:
        """The mean over blocks of MiLoRA's load-balancing loss of the last routing (None before any)."""
        terms = [load_balance_loss(p) for p in self.probs if p is not None]
        return torch.stack(terms).mean() if terms else None
