"""O-LoRA: orthogonal subspace learning for continual learning (Wang et al., EMNLP 2023 Findings; official code
cmnfriend/O-LoRA, read for the loss and defaults, reference/strategies.md §6.1).

Each task trains a fresh LoRA while the LoRAs of earlier tasks stay frozen and keep contributing (in the official code
they are concatenated into ``lora_A/B``; here they are frozen groups of the same AdapterLinear, which is the same
computation in one fused-op call). The loss adds ``λ1 Σ_layers Σ |A_oldᵀ A_new|`` (sum of absolute entries, pairing
the new A with all earlier A's) and ``λ2 ‖θ_new‖²``. Defaults follow the paper: r=8, α=32, λ1=0.5, λ2=0, targets q
and v. Simplifications: no LoRA dropout; the classifier head trains alongside (as every method here does).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from cl_suite.api import Task
from strategies.lora import LoRAAdapters


@dataclass
class OLoRAConfig:
    rank: int = 8
    alpha: float = 32.0
    targets: tuple[str, ...] = ("q", "v")
    lambda_orth: float = 0.5  # λ1
    lambda_l2: float = 0.0  # λ2
    per_task: bool = True  # fixed: O-LoRA adds one LoRA per task
    merge: bool = False  # fixed: old LoRAs stay separate (the orthogonality term needs their A)


class OLoRA(LoRAAdapters):
    """A new LoRA per task, earlier ones frozen, new A pushed orthogonal to all earlier A's."""

    supports = frozenset({"cil", "til", "dil", "fscil", "seg", "instr"})
    Config = OLoRAConfig

    def setup(self, model, ctx) -> None:
        if not self.config.per_task or self.config.merge:
            raise ValueError("O-LoRA needs strategy.per_task=true and strategy.merge=false")
        super().setup(model, ctx)

    def orthogonality(self) -> torch.Tensor:
        """Σ over layers of Σ |A_oldᵀ A_new| (0 while there is no earlier task)."""
        total = None
        for layer in self.layers.values():
            new, old = layer.groups[-1], list(layer.groups)[:-1]
            if not old:
                continue
            a_old = torch.cat([g.A for g in old], 1)
            term = (a_old.t() @ new.A).abs().sum()
            total = term if total is None else total + term
        return total

    def training_step(self, batch, task: Task) -> torch.Tensor:
        loss = self.model.loss(batch, task)
        c = self.config
        orth = self.orthogonality() if c.lambda_orth else None
        if orth is not None:
            loss = loss + c.lambda_orth * orth
        if c.lambda_l2:
            loss = loss + c.lambda_l2 * sum((g.A.square().sum() + g.B.square().sum())
                                            for g in (layer.groups[-1] for layer in self.layers.values()))  # fmt: skip
        return loss

    def strategy_stats(self) -> dict:
        orth = self.orthogonality()
        return {**super().strategy_stats(), "orthogonality": 0.0 if orth is None else round(float(orth), 4)}
