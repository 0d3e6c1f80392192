"""A classifier TaskModel: a feature backbone plus one linear head over the global label space.

Class-incremental protocol (as PyCIL/PILOT grow their head): logits of classes no task has introduced yet are
masked out of both the loss and the prediction; before any task starts nothing is masked. In the task-incremental
setting, ``predict(batch, task_id)`` restricts the logits to that task's classes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from cl_suite.api import Batch, BlockView, Context, LinearTarget, Task, TaskModel, to_device


class ClassifierModel(TaskModel):
    def __init__(self, backbone: nn.Module, feature_dim: int, task_classes: Sequence[Sequence[int]],
                 num_classes: int, backbone_name: str, label_smoothing: float = 0.0,
                 pretrained: bool = False) -> None:  # fmt: skip
        super().__init__()
        self.pretrained = pretrained  # the backbone arrives pretrained (strategies pick their regime's defaults)
        self.backbone = backbone
        self.head = nn.Linear(feature_dim, num_classes)
        self.backbone_name = backbone_name
        self.label_smoothing = label_smoothing
        task_mask = torch.zeros(len(task_classes), num_classes, dtype=torch.bool)
        for t, classes in enumerate(task_classes):
            task_mask[t, list(classes)] = True
        self.register_buffer("task_mask", task_mask, persistent=False)  # protocol data, rebuilt at construction
        self.register_buffer("seen", torch.zeros(num_classes, dtype=torch.bool))

    def on_task_start(self, task: Task) -> None:
        self.seen[list(task.classes)] = True

    def features(self, batch: Batch) -> torch.Tensor:
        return self.backbone(batch["x"])

    def logits(self, batch: Batch) -> torch.Tensor:
        return self.head(self.features(batch))

    def _mask(self, logits: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        if not allowed.any():
            return logits
        return logits.masked_fill(~allowed, torch.finfo(logits.dtype).min)

    def loss(self, batch: Batch, task: Task) -> torch.Tensor:
        logits = self._mask(self.logits(batch), self.seen)
        return F.cross_entropy(logits, batch["y"], label_smoothing=self.label_smoothing)

    def predict(self, batch: Batch, task_id: int | None) -> torch.Tensor:
        allowed = self.seen if task_id is None else self.task_mask[task_id]
        return self._mask(self.logits(batch), allowed)

    def head_parameters(self) -> list[nn.Parameter]:
        return list(self.head.parameters())

    def linear_targets(self) -> list[LinearTarget]:
        return self.backbone.linear_targets(prefix="backbone.")

    def blocks(self) -> list[BlockView]:
        return self.backbone.blocks()


HEAD_LOSSES = ("auto", "task", "model")


def head_loss(model: TaskModel, batch: Batch, task: Task, mode: str = "auto") -> torch.Tensor:
    """The loss a rehearsal-free method trains a classifier head with on a pretrained ViT.

    ``task``: cross-entropy over the current task's classes only (every other logit masked), as SEMA's code does
    (``logits[:, :known] = -inf``) and as CoSO/InfLoRA's per-task heads amount to; old classes' rows get no gradient
    pushing them down, so the head is not biased towards the newest task. ``model``: the scenario's own loss (over
    every seen class for ClassifierModel). ``auto``: ``task`` when the model has logits and a trainable head and the
    task introduces classes, else ``model`` (CLIP, LLMs, segmentation bring their own loss)."""
    if mode not in HEAD_LOSSES:
        raise ValueError(f"unknown head loss {mode!r}; accepted: {', '.join(HEAD_LOSSES)}")
    has_head = bool(task.classes) and callable(getattr(model, "logits", None)) and bool(model.head_parameters())
    if mode == "task" and not has_head:
        raise ValueError("head_loss=task needs a classifier head and a task with classes; use auto or model")
    if mode == "model" or not has_head:
        return model.loss(batch, task)
    logits = model.logits(batch)
    allowed = torch.zeros(logits.shape[-1], dtype=torch.bool, device=logits.device)
    allowed[list(task.classes)] = True
    return F.cross_entropy(logits.masked_fill(~allowed, torch.finfo(logits.dtype).min), batch["y"])


@torch.no_grad()
def evaluate_accuracy(predict: Callable[[Batch], torch.Tensor], task: Task, ctx: Context) -> dict[str, float]:
    """Top-1 accuracy in percent of ``predict``'s argmax on the task's test set."""
    correct = total = 0
    for batch in ctx.loader(task.test, batch_size=ctx.train.eval_batch_size):
        batch = to_device(batch, ctx.device)
        pred = predict(batch).argmax(dim=-1)
        correct += int((pred == batch["y"]).sum())
        total += int(batch["y"].numel())
    return {"acc": 100.0 * correct / max(total, 1), "n": total}

