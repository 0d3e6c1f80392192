"""LoCo-LoRA: LoCo-PVT's continual segmentation recipe (Zhu et al., MICCAI 2024, arXiv 2410.04689;
../shared/reference/strategies.md §6.6), on the shared adapter layer (cl_suite.adapters).

* Task 0 (the base task) trains the whole segmentation transformer and its head; then the model is frozen for good.
* Each later task adds its own LoRA group on the attention q/v projections, the MLPs (fc1, fc2) and the patch
  embeddings (encoder patch embedding and merge, decoder expansions), the three layer types the paper found to
  matter, plus its own output head (the scenario's model has one head per task). Only those are trained.
* Inference runs one branch per seen task: the frozen base with that task's LoRA group alone (none for the base task)
  feeding that task's head; the model combines the heads (cl_suite.models.segmentation). Old organs are therefore
  predicted exactly as right after their task: no forgetting, at the cost of one forward pass per task and the LoRA
  parameters of every task (reported as added inference parameters).

On ``organ-nifti`` the model is a 3D PVT with spatial-reduction attention (cl_suite.models.pvt3d, its own
simplifications listed there); on ``organ-tiny`` (and ``scenario.model=slice2d``) a 2D pyramid ViT on slices.
Simplified against the paper: per-task branches rather than whatever fusion the paper's decoder uses (not specified
in the material available). The task model must offer
``task_logits(batch, t)`` and ``combine({t: logits})``, as the suite's SegmentationModel does.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from cl_suite.adapters import AdapterLinear, bank_parameters, inject
from cl_suite.api import Batch, Context, Strategy, Task, TaskModel


@dataclass
class LoCoLoRAConfig:
    rank: int = 4
    alpha: float = 8.0  # LoRA scale = alpha / rank
    targets: tuple[str, ...] = ("q", "v", "fc1", "fc2", "patch")  # roles or name patterns (cl_suite.adapters)


class LoCoLoRA(Strategy):
    """Frozen base model after task 0; one LoRA group (q/v, MLP, patch embeddings) and one head per later task."""

    Config = LoCoLoRAConfig
    supports = frozenset({"seg"})
    requires = frozenset({"linear_targets"})

    def __init__(self, config: LoCoLoRAConfig | None = None) -> None:
        super().__init__(config)
        if self.config.rank < 1:
            raise ValueError(f"strategy.rank must be >= 1, got {self.config.rank}")
        self.group_of: dict[int, int] = {}  # task index -> group index in every adapted layer
        self.layer_names: list[str] = []

    def setup(self, model: TaskModel, ctx: Context) -> None:
        if not all(hasattr(model, name) for name in ("task_logits", "combine", "seen_tasks")):
            raise TypeError("loco-lora needs a per-task-head segmentation model (task_logits and combine), such as "
                            "cl_suite.models.segmentation.SegmentationModel")  # fmt: skip
        super().setup(model, ctx)

    # -- structure -----------------------------------------------------------------------------------------------
    def _layers(self) -> list[AdapterLinear]:
        return [self.model.get_submodule(name) for name in self.layer_names]

    def _inject(self) -> None:
        if not self.layer_names:
            backend = None if self.ctx is None or self.ctx.kernel_backend == "auto" else self.ctx.kernel_backend
            self.layer_names = list(inject(self.model, self.config.targets, backend=backend))

    def _add_group(self, task_index: int) -> None:
        indices = {layer.add_group(self.config.rank, self.config.alpha) for layer in self._layers()}
        if len(indices) != 1:
            raise RuntimeError(f"adapted layers disagree on the group index for task {task_index}: {sorted(indices)}")
        self.group_of[task_index] = indices.pop()

    def get_extra_state(self) -> dict[str, Any]:
        return {"group_of": dict(self.group_of)}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        """On resume: rebuild the adapters and their groups so the checkpoint's tensors have somewhere to go."""
        for task_index, _ in sorted(state["group_of"].items(), key=lambda kv: kv[1]):
            self._inject()
            if task_index not in self.group_of:
                self._add_group(int(task_index))

    # -- hooks ---------------------------------------------------------------------------------------------------
    def before_task(self, task: Task) -> None:
        if task.index == 0:  # the base task trains everything
            for p in self.model.parameters():
                p.requires_grad_(True)
            return
        self._inject()
        if task.index not in self.group_of:
            self._add_group(task.index)
        for p in self.model.parameters():
            p.requires_grad_(False)
        for layer in self._layers():
            for p in layer.groups[self.group_of[task.index]].parameters():
                p.requires_grad_(True)
        for p in self.model.head_parameters():  # this task's head (the model set it in on_task_start)
            p.requires_grad_(True)

    @contextmanager
    def branch(self, task_index: int) -> Iterator[None]:
        """Run the adapted layers with ``task_index``'s LoRA group alone (no group for the base task)."""
        saved = []
        for layer in self._layers():
            saved.append(layer.groups)
            keep = [layer.groups[self.group_of[task_index]]] if task_index in self.group_of else []
            layer.groups = nn.ModuleList(keep)
        try:
            yield
        finally:
            for layer, groups in zip(self._layers(), saved):
                layer.groups = groups

    def training_step(self, batch: Batch, task: Task) -> torch.Tensor:
        with self.branch(task.index):
            return self.model.loss(batch, task)

    def predict(self, batch: Batch, task_id: int | None) -> torch.Tensor:
        tasks = self.model.seen_tasks() if task_id is None else [task_id]
        if not tasks:
            return self.model.predict(batch, task_id)
        per_task = {}
        for t in tasks:
            with self.branch(t):
                per_task[t] = self.model.task_logits(batch, t)
        return self.model.combine(per_task)

    # -- reporting -----------------------------------------------------------------------------------------------
    def added_inference_parameters(self) -> int:
        return sum(p.numel() for p in bank_parameters(self._layers(), trainable_only=False))

    def strategy_stats(self) -> dict[str, Any]:
        return {"lora_tasks": len(self.group_of), "adapted_layers": len(self.layer_names),
                "lora_params": self.added_inference_parameters()}  # fmt: skip
