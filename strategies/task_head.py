"""The PILOT-style per-task head loss shared by the class-incremental ViT methods (CoSO, InfLoRA).

Their official code trains a new head per task (``classifier_pool[t]``) with cross-entropy over that task's classes
only, and predicts with all heads concatenated. On a scenario whose model has one head over the global label space
(``model.logits``) that is: drop the samples of other classes, keep the logits of the task's classes, make the targets
local. The rows of earlier classes then get no gradient, so with weight decay 0 they stay as they were (the frozen
heads). Models without such a head (CLIP, LLMs, segmentation with its own heads) keep their own loss.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from cl_suite.api import Batch, Task, TaskModel


def has_task_head(model: TaskModel, task: Task) -> bool:
    """Whether ``model`` has a trained head over a global label space and ``task`` introduces classes."""
    return bool(task.classes) and callable(getattr(model, "logits", None)) and bool(model.head_parameters())


def task_head_loss(model: TaskModel, batch: Batch, task: Task, temperature: float = 1.0) -> torch.Tensor:
    """Cross-entropy over ``task.classes`` only (other samples dropped, targets made local), logits / temperature."""
    classes = torch.tensor(task.classes, device=batch["y"].device)
    keep = torch.isin(batch["y"], classes)
    if not bool(keep.any()):
        raise ValueError(f"a batch of task {task.name!r} holds none of its classes {list(task.classes)}")
    kept = {k: (v[keep] if torch.is_tensor(v) and v.shape[:1] == keep.shape else v) for k, v in batch.items()}
    logits = model.logits(kept)[:, classes] / temperature
    target = (kept["y"][:, None] == classes[None, :]).float().argmax(1)
    return F.cross_entropy(logits, target)
