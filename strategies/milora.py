"""MiLoRA (Mixture of Low-Rank Adaptation, EMNLP 2024 Findings): each LoRA module of a layer is an expert, routed
once per prompt.

Zhang et al., "MiLoRA: Efficient Mixture of Low-Rank Adaptation for Large Language Models Fine-tuning" (arXiv
2410.18035; not "MiLoRA: minor singular components"; reference/strategies.md §6.3). No official code was found
(searched the code, docs and pages corpora); this follows the paper's Sections 3.3-3.4
(:class:`cl_suite.adapters.routing.PromptRouter`, :class:`~cl_suite.adapters.routing.PromptBinding`):

* The experts of a block are its LoRA modules (Q, K, V, O, Gate, Up, Down: N_mod = 7 on Llama); a router per
  block takes the block's input hidden states over the **prompt**, pools them (self-attention pooling by default),
  applies an activation g and ``TopK(softmax(g(h)·W_r))`` (Eq. 2-3); the chosen experts' gates are their
  probabilities. The routing is computed once per prompt, before the first new token, and reused for every
  generated token (a decode step of one position with a KV cache reuses it).
* Load balancing (Eq. 4-5): ``L_lb = N · Σ_i f_i p̂_i`` per block, added with λ = 1e-2 (mean over blocks here).
* Defaults: r = 32 per expert, k = 3.

Simplified (documented in the README): g is a fixed GeLU (the paper learns a rational activation, GeLU-initialised,
with DARTS bi-level optimisation on a validation split); the self-attention pooler of the paper's Appendix C was
not available, a one-vector attention pooling is used (``pooler=mean|last`` are the paper's other choices); the
LoRA scale is alpha / r with alpha = r (not stated); in training the prompt is the positions whose label is -100.
CL framing (strategies/expert_bank.py): each task adds one LoRA group per module (N_mod new experts per block) and
N_mod router outputs; earlier groups and rows are frozen; the pooler trains on the first task only, then is frozen.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from cl_suite.adapters.routing import PromptBinding
from cl_suite.api import Context, Task, TaskModel
from strategies.expert_bank import ExpertBankStrategy


@dataclass
class MiLoRAConfig:
    rank: int = 32  # r per expert (the paper's default)
    topk: int = 3  # experts (modules) active per block (the paper's default)
    alpha: float = 32.0  # scale alpha / r (not stated in the paper)
    balance_weight: float = 1e-2  # λ_lb of the load-balancing loss (the paper's value)
    pooler: Literal["attention", "mean", "last"] = "attention"
    targets: tuple[str, ...] = ("q", "k", "v", "o", "fc1", "fc2")  # on Llama: q,k,v,o,gate,up,down = 7 modules


class MiLoRA(ExpertBankStrategy):
    """LoRA modules as experts, a prompt-aware top-k router per block, computed once per prompt and reused."""

    supports = frozenset({"cil", "til", "dil", "fscil", "instr"})
    Config = MiLoRAConfig

    def setup(self, model: TaskModel, ctx: Context) -> None:
        super().setup(model, ctx)
        c = self.config
        if min(c.rank, c.topk) < 1 or c.balance_weight < 0:
            raise ValueError("strategy.rank and strategy.topk must be >= 1 and strategy.balance_weight >= 0")
        self.inject_experts(model, ctx)
        self.binding = PromptBinding(model.blocks(), self.layers, topk=c.topk, pooler=c.pooler, model=model,
                                     watch=getattr(model, "lm", None))  # fmt: skip
        if not self.binding.blocks:
            raise ValueError("milora found no block holding an adapted linear; check strategy.targets")
        self.routers = self.binding.routers
        self.grow()
        self.binding.attach()

    def _grow_task(self) -> None:
        for layer in self.layers.values():
            layer.add_group(self.config.rank, alpha=self.config.alpha)
        self.binding.grow()

    def _reset_bank(self) -> None:
        super()._reset_bank()
        for router in self.binding.routers:
            router.router.parts = type(router.router.parts)()

    def training_step(self, batch, task: Task):
        loss = self.model.loss(batch, task)
        balance = self.binding.balance_loss()
        return loss if balance is None or self.config.balance_weight == 0 else loss + self.config.balance_weight * balance

    def strategy_stats(self) -> dict:
        layer = next(iter(self.layers.values()), None)
        m = self.binding.modules_per_block
        return {
            "experts_per_block": m * self.tasks_grown,
            "modules_per_block": m,
            "active_experts_per_block": min(self.config.topk, m * self.tasks_grown),
            "routers": len(self.binding.routers),
            "groups_per_layer": len(layer.groups) if layer else 0,
            "added_inference_params": self.added_inference_parameters(),
        }
