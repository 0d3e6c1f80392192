"""Prototype classifier on a frozen backbone (SimpleCIL / nearest-class-mean).

Every class is represented by the mean feature of its training images, and a sample goes to the class whose
prototype is closest (cosine by default). With a pretrained backbone (``train_base=false``) nothing is ever
trained: this is SimpleCIL (Zhou et al., "Revisiting Class-Incremental Learning with Pre-Trained Models:
Generalizability and Adaptivity are All You Need", 2023); it is the default when the model says its backbone is
pretrained (``model.pretrained``). With a backbone trained from scratch (the default otherwise), the
first task trains backbone and head with the model's own loss, then the backbone is frozen and the head is
replaced by prototypes of every class, base classes included: the decoupled prototype baseline of FSCIL papers
(CEC, Zhang et al., CVPR 2021; FACT, Zhou et al., CVPR 2022). Old prototypes never change, so the only source of
forgetting is crowding of the shared feature space by new classes.

Written from the papers' descriptions; no code was copied. Simplifications: prototypes are computed on
``task.train`` as the scenario gives it (with its augmentation, if any), in one pass.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from cl_suite.api import Batch, Strategy, Task, to_device

METRICS = ("cosine", "euclidean")


@dataclass
class PrototypeConfig:
    train_base: bool | None = None  # true: train on the first task, then freeze; false: never train; none (auto):
    # false when the model's backbone is pretrained (``model.pretrained``, e.g. backbone=tiny-clip), else true
    metric: str = "cosine"  # "cosine" or "euclidean"
    scale: float = 16.0  # temperature of cosine scores (changes scores, never the argmax)


class Prototype(Strategy):
    """Class-mean prototypes of frozen features; the backbone trains only on the first task (if at all)."""

    supports = frozenset({"cil", "fscil"})
    requires = frozenset({"features"})
    Config = PrototypeConfig

    def __init__(self, config: PrototypeConfig | None = None) -> None:
        super().__init__(config)
        if self.config.metric not in METRICS:
            raise ValueError(f"prototype metric must be one of {', '.join(METRICS)}, got {self.config.metric!r}")
        self.class_ids = torch.zeros(0, dtype=torch.long)
        self.prototypes = torch.zeros(0, 0)

    def before_task(self, task: Task) -> None:
        # The runner reads ``trains`` before each task: train only the first task, and only if asked to.
        train_base = self.config.train_base
        if train_base is None:
            train_base = not getattr(self.model, "pretrained", False)
        self.trains = train_base and task.index == 0
        if not self.trains:
            self.model.requires_grad_(False)

    def after_task(self, task: Task) -> None:
        self.model.requires_grad_(False)
        means = self._class_means(task)
        keep = ~torch.isin(self.class_ids, torch.tensor(sorted(means), dtype=torch.long, device=self.class_ids.device))
        ids = torch.cat([self.class_ids[keep].cpu(), torch.tensor(sorted(means), dtype=torch.long)])
        rows = [*self.prototypes[keep].cpu()] if len(self.prototypes) else []
        rows += [means[c] for c in sorted(means)]
        device = self.ctx.device
        self.class_ids, self.prototypes = ids.to(device), torch.stack(rows).to(device)

    @torch.no_grad()
    def _class_means(self, task: Task) -> dict[int, torch.Tensor]:
        """Mean feature of each class in ``task.train``, computed in eval mode."""
        was_training = self.training
        self.eval()
        sums: dict[int, torch.Tensor] = {}
        counts: dict[int, int] = {}
        for batch in self.ctx.loader(task.train, batch_size=self.ctx.train.eval_batch_size):
            batch = to_device(batch, self.ctx.device)
            feats = self.model.features(batch).float().cpu()
            for label in batch["y"].unique().tolist():
                chosen = feats[batch["y"].cpu() == label]
                sums[label] = sums.get(label, 0) + chosen.sum(0)
                counts[label] = counts.get(label, 0) + len(chosen)
        self.train(was_training)
        if not sums:
            raise ValueError(f"task {task.name!r} has no training examples to build prototypes from")
        return {c: sums[c] / counts[c] for c in sums}

    def predict(self, batch: Batch, task_id: int | None) -> torch.Tensor:
        if not len(self.class_ids):  # before any task: the model's own (untrained) prediction
            return self.model.predict(batch, task_id)
        feats = self.model.features(batch).float()
        protos = self.prototypes.to(feats.device)
        if self.config.metric == "cosine":
            scores = self.config.scale * F.normalize(feats, dim=-1) @ F.normalize(protos, dim=-1).T
        else:
            scores = -torch.cdist(feats, protos).pow(2)
        out = torch.full((len(feats), int(self.class_ids.max()) + 1), torch.finfo(scores.dtype).min,
                         device=feats.device)  # fmt: skip
        out[:, self.class_ids.to(feats.device)] = scores
        return out

    def get_extra_state(self) -> dict[str, Any]:
        return {"class_ids": self.class_ids.cpu(), "prototypes": self.prototypes.cpu()}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        device = self.ctx.device if self.ctx is not None else torch.device("cpu")
        self.class_ids, self.prototypes = state["class_ids"].to(device), state["prototypes"].to(device)

    def added_inference_parameters(self) -> int:
        return int(self.prototypes.numel())

    def strategy_stats(self) -> dict[str, Any]:
        return {"prototypes": len(self.class_ids)}
