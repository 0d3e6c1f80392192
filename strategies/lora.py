"""LoRA baselines on the shared adapter layers: sequential LoRA (one adapter trained through every task) and
incremental LoRA (a fresh adapter per task, earlier ones frozen, optionally merged into the weights).

Hu et al., "LoRA: Low-Rank Adaptation of Large Language Models" (ICLR 2022); SeqLoRA / IncLoRA are the baselines of
O-LoRA's Table 1 (reference/strategies.md §6.1). The backbone stays frozen; the classifier head
(``model.head_parameters()``) trains alongside the adapters. Every adapted layer is a
:class:`cl_suite.adapters.AdapterLinear`, so all groups of a layer run as one fused-op call. Simplification: no LoRA
dropout.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from cl_suite.adapters import AdapterBankStrategy, AdapterLinear, inject
from cl_suite.api import Context, Task, TaskModel


@dataclass
class LoRAConfig:
    rank: int = 8
    alpha: float = 16.0  # scale alpha / rank
    targets: tuple[str, ...] = ("q", "v")  # roles (q, k, v, o, fc1, fc2, patch), "all", or name patterns
    per_task: bool = False  # False: one LoRA through all tasks (SeqLoRA); True: a new LoRA per task (IncLoRA)
    merge: bool = False  # with per_task: fold each finished task's LoRA into the weights (no inference cost)


class LoRAAdapters(AdapterBankStrategy):
    """Shared machinery of the LoRA family: inject, grow a group per task, freeze, merge, rebuild on resume."""

    requires = frozenset({"linear_targets"})

    def __init__(self, config=None) -> None:
        super().__init__(config)
        self.layers: dict[str, AdapterLinear] = {}
        self.groups_made = 0

    def setup(self, model: TaskModel, ctx: Context) -> None:
        super().setup(model, ctx)
        c = self.config
        if c.rank < 1:
            raise ValueError(f"strategy.rank must be >= 1, got {c.rank}")
        model.requires_grad_(False)
        self.layers = inject(model, c.targets, backend=ctx.kernel_backend)
        self._grow()  # the first group exists before the first task so checkpoints always match

    def _grow(self) -> None:
        for layer in self.layers.values():
            layer.add_group(self.config.rank, self.config.alpha)
        self.groups_made += 1

    def before_task(self, task: Task) -> None:
        if task.index > 0 and self.config.per_task:
            self._grow()
        for p in self.model.head_parameters():
            p.requires_grad_(True)

    def after_task(self, task: Task) -> None:
        if not self.config.per_task:
            return
        for layer in self.layers.values():
            layer.freeze()
            if self.config.merge:
                layer.merge_groups()

    def strategy_stats(self) -> dict:
        layer = next(iter(self.layers.values()), None)
        return {"adapted_layers": len(self.layers), "groups_per_layer": len(layer.groups) if layer else 0,
                "merged_per_layer": layer.merged_groups if layer else 0}  # fmt: skip

    # -- resume: rebuild the bank's structure before the tensors load ---------------------------------------
    def get_extra_state(self) -> dict:
        layer = next(iter(self.layers.values()), None)
        return {"groups": len(layer.groups) if layer else 0, "merged": layer.merged_groups if layer else 0,
                "frozen": [g.frozen for g in layer.groups] if layer else []}  # fmt: skip

    def set_extra_state(self, state: dict) -> None:
        for layer in self.layers.values():
            layer.groups = nn.ModuleList()
            for frozen in state["frozen"]:
                i = layer.add_group(self.config.rank, self.config.alpha)
                if frozen:
                    layer.freeze_group(i)
            layer.merged_groups = state["merged"]


class LoRA(LoRAAdapters):
    """Sequential LoRA on chosen roles (frozen backbone, trained head); per_task=true gives incremental LoRA."""

    supports = frozenset({"cil", "til", "dil", "fscil", "seg", "instr"})
    Config = LoRAConfig
