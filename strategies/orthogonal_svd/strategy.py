"""OSFT ("Sculpting Subspaces"): full fine-tuning constrained orthogonal to each matrix's top singular directions.

Nayak et al., "Sculpting Subspaces: Constrained Full Fine-Tuning in LLMs for Continual Learning" (arXiv 2504.07097,
ICLR 2026); official code Red-Hat-AI-Innovation-Team/orthogonal-subspace-learning, its cleaned versions in
mini_trainer (``osft_utils.py``, PR #1 and #16) and HF PEFT ``tuners/osf`` (reference/strategies.md §5). Written from
those sources, not copied.

Per task, for every target matrix (default: attention q/k/v/o and MLP fc1/fc2, as the paper's q/k/v/o and
gate/up/down or wi/wo): SVD of the current weight (earlier tasks included); the top-``k`` triplets become frozen
buffers and the rest trainable; after each backward the gradients of ``U_low``/``V_low`` lose their components in
``U_high``/``V_high`` (``Σ_low`` is free); after each optimizer step the low vectors themselves are re-projected
(mini_trainer PR #16; ``strategy.reproject=false`` turns it off, as in PEFT); the forward uses ``F.linear`` with the
rebuilt weight (the PEFT/mini_trainer fix of the notebook's gradient-flow bug). At task end the dense weight is
written back, so checkpoints and inference see a plain model: no task id, no added parameter.

``k`` per matrix (``strategy.rank_rule``, see ranks.py): ``adaptive`` (default, the paper: importance from the
previous task's data, mrr 0.1, trr 0.8), ``schedule`` (the official T5 notebook: 7% of the larger side more per
task) or ``fixed`` (mini_trainer/PEFT: half the smaller side). Differences from the sources, all deliberate:

* The first task has no previous task, so its importance scan uses its own training data (the paper starts from a
  model already fine-tuned on a source task and scans that task's data).
* Parameters outside the targets (embeddings, norms, biases, heads) train freely on models without a classifier head
  (LLMs, CLIP), as in the official notebook and mini_trainer ("full" fine-tuning). On a classifier (a pretrained
  ViT under a head: digits-tiny, fscil-tiny) the default ``train_others=auto`` trains only the head besides the
  targets, as every method of the frozen-pretrained-ViT regime does (SEMA, CoSO, InfLoRA); measured on digits-tiny
  (tiny CLIP, seed 0): Last 31.8 with ``all`` against 44.1 with ``head``. ``strategy.train_others=all|head|none``
  picks one explicitly (``none``: only the low factors, as PEFT).
* The per-matrix cosine is near zero with both signs on the models measured here (SmolLM2-135M, the tiny CLIP), so
  the paper's mean-1 normalisation is ill-conditioned: a non-positive mean gives every matrix ``trr`` (stats:
  ``importance_degenerate``) and a tiny positive one spreads k to the extremes; ``fixed``/``schedule`` avoid this.
* The importance scan runs the scenario's loss on at most ``importance_batches`` batches (the commented official code
  ran 5 batches of 8) and uses ``F.cosine_similarity`` (eps 1e-8 on the product of norms rather than on each norm).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from cl_suite.adapters.inject import select_targets
from cl_suite.api import Context, Strategy, Task, TaskModel, to_device
from cl_suite.models.classifier import head_loss
from strategies.orthogonal_svd.ranks import (
    RULES,
    adaptive_ranks,
    fixed_ranks,
    importance_is_degenerate,
    layer_importance,
    schedule_ranks,
)
from strategies.orthogonal_svd.svd_linear import OrthogonalSVDLinear

OTHERS = ("auto", "all", "head", "none")


@dataclass
class OrthogonalSVDConfig:
    targets: tuple[str, ...] = ("q", "k", "v", "o", "fc1", "fc2")  # roles, "all", or name patterns
    rank_rule: str = "adaptive"  # adaptive (paper) | schedule (official T5 notebook) | fixed (mini_trainer, PEFT)
    mrr: float = 0.1  # adaptive: minimum retained ratio
    trr: float = 0.8  # adaptive: target retained ratio
    importance_batches: int = 5  # adaptive: batches of the previous task's data scanned for layer importance
    schedule_step: float = 0.07  # schedule: k = floor(max(shape) * step * (task + 1))
    fixed_ratio: float = 0.5  # fixed: k = floor(min(shape) * ratio)
    reproject: bool = True  # re-project U_low/V_low after every optimizer step (mini_trainer PR #16)
    train_others: str = "auto"  # auto: head on a classifier, else all | all (official: full fine-tuning) | head | none
    head_loss: Literal["auto", "task", "model"] = "auto"  # classifier heads: CE over the current task's classes (auto)


class OrthogonalSVD(Strategy):
    """OSFT: per-task SVD of every target matrix; train only orthogonal to its top-k singular directions."""

    supports = frozenset({"cil", "til", "dil", "fscil", "seg", "instr"})
    requires = frozenset({"linear_targets"})
    Config = OrthogonalSVDConfig

    def __init__(self, config: Any = None) -> None:
        super().__init__(config)
        self.wrapped: dict[str, tuple[nn.Module, str, nn.Linear, OrthogonalSVDLinear]] = {}
        self.ranks: dict[str, int] = {}
        self.importance: dict[str, float] = {}

    def training_step(self, batch, task: Task) -> torch.Tensor:
        """With a classifier head, CE over the current task's classes (``head_loss``; the official code has a frozen
        CLIP text classifier or an LM head instead, which a new task cannot bias); else the scenario's loss."""
        return head_loss(self.model, batch, task, self.config.head_loss)

    def setup(self, model: TaskModel, ctx: Context) -> None:
        c = self.config
        if c.rank_rule not in RULES:
            raise ValueError(f"strategy.rank_rule must be one of {', '.join(RULES)}, got {c.rank_rule!r}")
        if c.train_others not in OTHERS:
            raise ValueError(f"strategy.train_others must be one of {', '.join(OTHERS)}, got {c.train_others!r}")
        if not 0 <= c.mrr <= c.trr:
            raise ValueError(f"strategy.mrr and trr need 0 <= mrr <= trr, got mrr={c.mrr}, trr={c.trr}")
        if c.importance_batches < 1:
            raise ValueError(f"strategy.importance_batches must be >= 1, got {c.importance_batches}")
        super().setup(model, ctx)
        select_targets(model, c.targets)  # fail now, with the roles the model has, rather than at the first task

    # -- task boundary --------------------------------------------------------------------------------------
    def before_task(self, task: Task) -> None:
        targets = dict(select_targets(self.model, self.config.targets))
        self.ranks = self._ranks(task, targets)
        for name, linear in targets.items():
            parent_name, _, attr = name.rpartition(".")
            parent = self.model.get_submodule(parent_name) if parent_name else self.model
            layer = OrthogonalSVDLinear(linear, self.ranks[name])
            setattr(parent, attr, layer)
            self.wrapped[name] = (parent, attr, linear, layer)
        others = self.config.train_others
        if others == "auto":
            others = "head" if self.model.head_parameters() else "all"
        self.model.requires_grad_(others == "all")
        if others == "head":
            for p in self.model.head_parameters():
                p.requires_grad_(True)
        for *_, layer in self.wrapped.values():
            for p in layer.low_parameters():
                p.requires_grad_(layer.trainable_rank > 0)

    def _ranks(self, task: Task, targets: dict[str, nn.Linear]) -> dict[str, int]:
        c = self.config
        shapes = {name: tuple(m.weight.shape) for name, m in targets.items()}
        if c.rank_rule == "schedule":
            return schedule_ranks(shapes, task.index, c.schedule_step)
        if c.rank_rule == "fixed":
            return fixed_ranks(shapes, c.fixed_ratio)
        seen = list(self.ctx.tasks_seen())
        source = seen[task.index - 1] if 0 < task.index <= len(seen) else task
        self.importance = layer_importance(targets, lambda: self._scan(source))
        return adaptive_ranks(self.importance, shapes, c.mrr, c.trr)

    def _scan(self, source: Task):
        """Forward passes of the model's loss over the first batches of ``source``'s training data (eval mode)."""
        was_training = self.model.training
        self.model.eval()
        try:
            for i, batch in enumerate(self.ctx.loader(source.train, shuffle=False)):
                if i >= self.config.importance_batches:
                    break
                yield self.model.loss(to_device(batch, self.ctx.device), source)
        finally:
            self.model.train(was_training)

    def after_task(self, task: Task) -> None:
        """Write each rebuilt weight back into its original ``nn.Linear`` and put that layer back in the model."""
        for parent, attr, linear, layer in self.wrapped.values():
            linear.weight.data.copy_(layer.reconstruct())
            setattr(parent, attr, linear)
        self.wrapped = {}

    # -- training hooks -------------------------------------------------------------------------------------
    def after_backward(self) -> None:
        for *_, layer in self.wrapped.values():
            layer.project_gradients()

    def after_step(self) -> None:
        if self.config.reproject:
            for *_, layer in self.wrapped.values():
                layer.project_parameters()

    # -- reporting ------------------------------------------------------------------------------------------
    def strategy_stats(self) -> dict:
        stats: dict[str, Any] = {"rank_rule": self.config.rank_rule, "k": dict(self.ranks)}
        if self.config.rank_rule == "adaptive":
            stats["importance"] = {name: round(v, 4) for name, v in self.importance.items()}
            stats["importance_degenerate"] = importance_is_degenerate(self.importance)
        return stats
