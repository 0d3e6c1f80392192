"""SMoRA ("Each Rank Could be an Expert: Single-Ranked Mixture of Experts LoRA for Multi-task Learning").

Zhao et al., arXiv 2501.15103, KDD 2026 (reference/strategies.md §6.5). Official code: ``StyxXuan/smora`` (SRMoLE in
its PEFT fork, ``packages/peft/src/peft/tuners/srmole/{layer,config}.py`` @ 8bdabcd), read for the routing rule and
defaults; our own implementation on the shared adapter layer (:class:`cl_suite.adapters.routing.RankRouter`).

Every rank of the layer's LoRA is an expert. Per token and layer: ``p = sigmoid(x·W_g) + b``, keep the top-k,
``g = k · p_topk / Σ p_topk``, ``y = x·Wᵀ + (alpha/k) · ((x·A) ⊙ g)·B``. ``b`` is the auxiliary-loss-free balancing
bias, not trained: after each training forward ``b ← b + u · sign(mean count − count)``. Defaults from the official
code: ``activate_r`` k = 8 (SRMoLEConfig), ``bias_update_rate`` u = 1e-5 (SRMoLELinear), ``rank_partition`` 1
(one rank per expert), router without bias, A kaiming-uniform, B zero, and from its README example r = 16,
lora_alpha = 32, targets q_proj, v_proj. The paper's tables and training hyper-parameters were not available.

CL framing (strategies/expert_bank.py): each task adds ``rank`` new ranks and their router rows; earlier ranks and
rows are frozen; the top-k runs over the ranks of all tasks. ``bias_update=current`` (default) moves only the
current task's biases (the frozen tasks' routing is part of what they learned); ``all`` is the official rule.
Simplification: no LoRA dropout (the official default 0.1 in its README example; the fused op shares x).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from cl_suite.adapters.routing import RankRouter
from cl_suite.api import Context, TaskModel
from strategies.expert_bank import ExpertBankStrategy


@dataclass
class SMoRAConfig:
    rank: int = 16  # r: new ranks (experts) per task per layer (official README example)
    topk: int = 8  # k = activate_r: ranks active per token (official SRMoLEConfig default)
    alpha: float = 32.0  # lora_alpha; the output scale is alpha / k (official)
    update_rate: float = 1e-5  # u of the balancing-bias update (official bias_update_rate)
    bias_update: Literal["current", "all"] = "current"  # which ranks' biases move (all: the official rule)
    targets: tuple[str, ...] = ("q", "v")  # official README example: q_proj, v_proj


class SMoRA(ExpertBankStrategy):
    """A growing LoRA whose every rank is an expert; a per-layer, per-token router activates the top-k ranks."""

    supports = frozenset({"cil", "til", "dil", "fscil", "instr"})
    requires = frozenset({"linear_targets"})
    Config = SMoRAConfig

    def setup(self, model: TaskModel, ctx: Context) -> None:
        super().setup(model, ctx)
        c = self.config
        if min(c.rank, c.topk) < 1 or c.update_rate < 0:
            raise ValueError("strategy.rank and strategy.topk must be >= 1 and strategy.update_rate >= 0")
        self.inject_experts(model, ctx)
        for layer in self.layers.values():
            router = RankRouter(layer.in_features, c.topk, c.update_rate)
            layer.routers.append(router)  # lives in the layer: saved, counted and trained with its bank
            layer.gate_source = router.__call__  # a bound call, so the router is not registered twice
        self.grow()

    @staticmethod
    def router_of(layer) -> RankRouter:
        return layer.routers[0]

    def _grow_task(self) -> None:
        c = self.config
        for layer in self.layers.values():
            router = self.router_of(layer)
            start = layer.rank
            layer.add_group(c.rank, alpha=c.alpha / c.topk * c.rank)  # group scale = alpha / k
            router.grow(c.rank, layer.base.weight)
            router.trainable_from = start if c.bias_update == "current" else 0

    def _freeze_routers(self) -> None:
        for layer in self.layers.values():
            self.router_of(layer).requires_grad_(False)

    def _reset_bank(self) -> None:
        super()._reset_bank()
        for layer in self.layers.values():
            router = self.router_of(layer)
            router.router.parts = type(router.router.parts)()
            router.bias = router.bias.new_zeros(0)

    def strategy_stats(self) -> dict:
        layer = next(iter(self.layers.values()), None)
        return {
            "ranks_per_layer": layer.rank if layer else 0,
            "active_ranks_per_token": min(self.config.topk, layer.rank) if layer else 0,
            "adapted_layers": len(self.layers),
            "bias_abs_max": float(self.router_of(layer).bias.abs().max()) if layer and layer.rank else 0.0,
            "added_inference_params": self.added_inference_parameters(),
        }
