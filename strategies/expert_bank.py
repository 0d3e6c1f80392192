"""The continual-learning framing shared by the MoE-LoRA strategies (lora-switch, smora, milora).

Those methods are multi-task methods; they are framed here as MoRA and MoE-Adapters are: every task appends new
experts (groups of the layers' :class:`AdapterLinear` banks) and new router outputs for them; at the end of a task
the task's experts and router rows are frozen, so earlier tasks' experts and their router logits stay as trained;
the routing rule runs over the whole bank (all tasks' experts), with no task id. New experts join at the start of
the next task (``before_task``), so the evaluation after task t routes over the experts of tasks 1..t.
"""

from __future__ import annotations

from collections.abc import Iterator

from torch import nn

from cl_suite.adapters import AdapterBankStrategy, AdapterLinear, inject
from cl_suite.api import Context, Task, TaskModel


class ExpertBankStrategy(AdapterBankStrategy):
    """Subclasses set ``self.layers`` (with :meth:`inject_experts`) and ``self.routers`` (a ModuleList of the routers
    it owns, possibly empty) in ``setup`` and implement ``_grow_task`` (one task's experts and router rows) and ``_freeze_routers``."""

    supports = frozenset({"cil", "til", "dil", "fscil", "instr"})
    requires = frozenset({"linear_targets", "blocks"})

    def __init__(self, config=None) -> None:
        super().__init__(config)
        self.layers: dict[str, AdapterLinear] = {}
        self.routers = nn.ModuleList()
        self.tasks_grown = 0

    # -- the bank ------------------------------------------------------------------------------------------
    def inject_experts(self, model: TaskModel, ctx: Context) -> None:
        """Freeze the model and put an external-gate AdapterLinear on every target (the routers set the gates)."""
        model.requires_grad_(False)
        self.layers = inject(model, self.config.targets, gate="external", backend=ctx.kernel_backend)

    def _grow_task(self) -> None:
        raise NotImplementedError

    def _freeze_routers(self) -> None:
        self.routers.requires_grad_(False)

    def grow(self) -> None:
        self._grow_task()
        self.tasks_grown += 1

    def _current_frozen(self) -> bool:
        layer = next(iter(self.layers.values()))
        return layer.groups[-1].frozen

    def before_task(self, task: Task) -> None:
        if self._current_frozen():
            self.grow()
        for p in self.model.head_parameters():
            p.requires_grad_(True)

    def after_task(self, task: Task) -> None:
        for layer in self.layers.values():
            layer.freeze()
        self._freeze_routers()

    # -- parameters ----------------------------------------------------------------------------------------
    def trainable_parameters(self) -> Iterator[nn.Parameter]:
        own = [p for p in self.routers.parameters() if p.requires_grad]
        return iter([*super().trainable_parameters(), *own])

    def added_inference_parameters(self) -> int:
        return super().added_inference_parameters() + sum(p.numel() for p in self.routers.parameters())

    # -- resume --------------------------------------------------------------------------------------------
    def get_extra_state(self) -> dict:
        return {"tasks": self.tasks_grown, "frozen": self._current_frozen() if self.layers else False}

    def set_extra_state(self, state: dict) -> None:
        self._reset_bank()
        for _ in range(state["tasks"]):
            self.grow()
        if state["frozen"]:
            for layer in self.layers.values():
                layer.freeze()
            self._freeze_routers()

    def _reset_bank(self) -> None:
        """Empty the banks and the routers' growth (subclasses clear their routers' parts)."""
        for layer in self.layers.values():
            layer.groups = nn.ModuleList()
        self.tasks_grown = 0
