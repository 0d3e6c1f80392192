"""Rank-selective LoRA (CoDyRA): importance-weighted LoRA ranks, sparsified by a proximal step, merged at task end.

Lu et al., "Adaptive Rank, Reduced Forgetting: Knowledge Retention in Continual Learning Vision-Language Models with
Dynamic Rank-Selective LoRA" (arXiv 2412.01004; retitled "Take Only What You Need", EMNLP 2026 Findings); official code
Artificer-AI-Lab/CoDyRA at c1691e4 (``loralib/codyra.py``, ``models/codyra.py``, ``runner_codyra.sh``), read for the
mechanism, the schedule and the defaults (reference/strategies.md §3 and §9.3). Our own implementation on the shared
adapter layer.

Every target linear becomes a :class:`cl_suite.adapters.AdapterLinear` in ``importance`` gate mode with one group per
task: ``y = x·W0ᵀ + b + ((x·A) ⊙ w)·B`` with no scaling (the official ``lora_alpha`` is ignored), ``A``
kaiming-uniform, ``B = 0`` and the importance ``w ~ N(0, 1)`` at every (re-)initialisation. After every optimizer step
past the dense phase, ``w`` gets a proximal step with a threshold κ (applied as is, not times the learning rate):

* ``prox=official`` (default): the official three in-place masks in sequence — ``w[w > κ] -= κ``, ``w[w < -κ] += κ``,
  then ``w[|w| < κ] = 0`` on the already-shifted values. So κ < |w| < 2κ becomes 0, |w| = κ is kept, |w| = 2κ becomes
  ±κ and larger values shrink by κ (§9.3).
* ``prox=soft``: textbook soft-thresholding ``sign(w)·max(|w| − κ, 0)`` (the paper's reading).

Schedule (:class:`KappaSchedule`, by iterations, the official loop): ``dense = dense_fraction · iterations``,
``step = int((iterations − dense) // lambda_num)``, κ walks ``linspace(0, max_kappa, lambda_num)`` one entry at each
iteration ``i ≥ dense`` with ``i % step == 0`` (never when ``step`` is 0), and the proximal step runs after the
optimizer step of every iteration ``i > dense``. ``iterations`` is the runner's step count for the task
(``train.max_steps``, else epochs × batches) unless ``strategy.iterations`` sets it.

At the end of each task every layer drops the ranks whose importance is exactly 0, merges ``(A·diag(w))·B`` into the
frozen weight and deletes the group; the next task starts a fresh full-rank group. Inference is the plain merged model:
no task id and zero added parameters. ``strategy_stats`` records the effective rank (ranks merged) per layer per task.

Defaults from ``runner_codyra.sh``: r=16, lr 5e-4, κ_max=0.005, dense fraction 0.5, 50 κ steps, roles q,k,v,o,fc1,fc2
(both CLIP towers), AdamW β=(0.9, 0.9999), wd 0, cosine learning rate.

Differences from the official code: the fresh group is created at the start of the next task rather than right after
the merge (same computation; the merged model then carries no unused adapter at evaluation); the merged factors are not
kept as ``old_lora_*`` bookkeeping (they are already in the weight); no LoRA dropout (the official default is 0); the
CLIP text→image loss term is the scenario's ``text_loss`` option, set to the official runner's (weight 1,
``text_loss_form=official``) through ``scenario_defaults``; the classifier head of
models that have one (digits-tiny) trains alongside, as in every adapter strategy here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from cl_suite.adapters import AdapterBankStrategy, AdapterLinear, inject
from cl_suite.api import Context, Task, TaskModel
from cl_suite.models.classifier import head_loss

PROX_MODES = ("official", "soft")


@torch.no_grad()
def proximal_official(w: torch.Tensor, kappa: float) -> torch.Tensor:
    """The official proximal step, in place: shift by κ above/below ±κ, then zero the (shifted) |w| < κ."""
    w[w > kappa] -= kappa
    w[w < -kappa] += kappa
    w[w.abs() < kappa] = 0.0
    return w


@torch.no_grad()
def soft_threshold(w: torch.Tensor, kappa: float) -> torch.Tensor:
    """Textbook soft-thresholding, in place: ``sign(w)·max(|w| − κ, 0)``."""
    w.copy_(torch.sign(w) * torch.clamp(w.abs() - kappa, min=0.0))
    return w


@dataclass(frozen=True)
class KappaSchedule:
    """The official κ schedule over one task's iterations (see the module docstring)."""

    iterations: int
    max_kappa: float = 0.005
    dense_fraction: float = 0.5
    lambda_num: int = 50

    @property
    def dense(self) -> float:
        return self.dense_fraction * self.iterations

    @property
    def step(self) -> int:
        """Iterations between κ moves; 0 means κ never moves (too few iterations)."""
        return int((self.iterations - self.dense) // self.lambda_num)

    def kappa(self, iteration: int) -> float:
        """κ in force during ``iteration`` (0-based), after that iteration's possible move."""
        step = self.step
        if step <= 0 or iteration < self.dense:
            return 0.0
        first = step * int(np.ceil(self.dense / step))  # the first multiple of step at or after the dense count
        moves = iteration // step - first // step + 1 if iteration >= first else 0
        lambdas = np.linspace(0, self.max_kappa, self.lambda_num)
        return float(lambdas[min(len(lambdas) - 1, moves)])

    def prunes(self, iteration: int) -> bool:
        """Whether the proximal step runs after ``iteration``'s optimizer step (strictly past the dense phase)."""
        return iteration > self.dense


@dataclass
class RankSelectiveLoRAConfig:
    rank: int = 16  # r: full rank of each task's LoRA
    max_kappa: float = 0.005  # κ_max, the last threshold of the schedule
    dense_fraction: float = 0.5  # share of a task's iterations before any proximal step
    lambda_num: int = 50  # κ steps in linspace(0, max_kappa, lambda_num)
    prox: Literal["official", "soft"] = "official"  # official masks (§9.3) or textbook soft-thresholding
    iterations: int = 0  # iterations the schedule spans per task; 0: the runner's step count for the task
    targets: tuple[str, ...] = ("q", "k", "v", "o", "fc1", "fc2")  # roles, "all" or name patterns
    betas: tuple[float, float] = (0.9, 0.9999)  # AdamW / Adam betas of the official trainer
    head_loss: Literal["auto", "task", "model"] = "auto"  # classifier heads: CE over the current task's classes (auto)


class RankSelectiveLoRA(AdapterBankStrategy):
    """CoDyRA: per-task LoRA with a sparse learned rank importance (proximal steps), merged into the weights."""

    supports = frozenset({"cil", "til", "dil", "fscil", "seg", "instr"})
    requires = frozenset({"linear_targets"})
    train_defaults = {"optimizer": "adamw", "lr": 5e-4, "weight_decay": 0.0, "scheduler": "cosine"}
    # CoDyRA's runner adapts both CLIP towers (target_encoder=all), so its train_model adds the text->image term, weight 1.
    scenario_defaults = {"text_loss": 1.0, "text_loss_form": "official"}
    Config = RankSelectiveLoRAConfig

    def __init__(self, config=None) -> None:
        super().__init__(config)
        self.layers: dict[str, AdapterLinear] = {}
        self.schedule: KappaSchedule | None = None
        self._iteration = 0
        self._kappa = 0.0
        self._history: list[dict[str, int]] = []  # effective rank per layer, one entry per finished task

    def training_step(self, batch, task: Task) -> torch.Tensor:
        """With a classifier head, CE over the current task's classes (``head_loss``; the official code has a frozen
        CLIP text classifier or an LM head instead, which a new task cannot bias); else the scenario's loss."""
        return head_loss(self.model, batch, task, self.config.head_loss)

    def setup(self, model: TaskModel, ctx: Context) -> None:
        super().setup(model, ctx)
        c = self.config
        if c.rank < 1 or c.lambda_num < 1 or c.iterations < 0:
            raise ValueError(f"strategy.rank and strategy.lambda_num must be >= 1 and strategy.iterations >= 0, "
                             f"got {c.rank}, {c.lambda_num}, {c.iterations}")  # fmt: skip
        if not 0 <= c.dense_fraction <= 1 or c.max_kappa < 0:
            raise ValueError(f"strategy.dense_fraction must be in [0, 1] and strategy.max_kappa >= 0, "
                             f"got {c.dense_fraction} and {c.max_kappa}")  # fmt: skip
        if c.prox not in PROX_MODES:
            raise ValueError(f"unknown strategy.prox {c.prox!r}; accepted: {', '.join(PROX_MODES)}")
        model.requires_grad_(False)
        self.layers = inject(model, c.targets, gate="importance", backend=ctx.kernel_backend)

    # -- per task --------------------------------------------------------------------------------------------
    def task_iterations(self, task: Task) -> int:
        """Iterations the κ schedule spans for ``task``: the config's, else the runner's step count."""
        if self.config.iterations:
            return self.config.iterations
        train = self.ctx.train
        if train.max_steps:
            return train.max_steps
        batches = -(-len(self.train_data(task)) // train.batch_size)  # the runner's loader keeps the last batch
        return train.epochs * batches

    def before_task(self, task: Task) -> None:
        for layer in self.layers.values():
            if layer.groups:  # a task that ended without after_task (never in the runner): start clean
                layer.prune_groups(list(range(len(layer.groups))))
            layer.add_group(self.config.rank)  # scale 1: CoDyRA has no alpha / r
        c = self.config
        self.schedule = KappaSchedule(self.task_iterations(task), c.max_kappa, c.dense_fraction, c.lambda_num)
        self._iteration, self._kappa = 0, 0.0
        for p in self.model.head_parameters():
            p.requires_grad_(True)

    def after_step(self) -> None:
        """The κ move of this iteration (the official loop makes it before the step; nothing reads κ in between),
        then the proximal step on every importance vector once past the dense phase."""
        self._kappa = self.schedule.kappa(self._iteration)
        if self.schedule.prunes(self._iteration):
            prox = proximal_official if self.config.prox == "official" else soft_threshold
            for layer in self.layers.values():
                prox(layer.groups[-1].importance.data, self._kappa)
        self._iteration += 1

    @torch.no_grad()
    def after_task(self, task: Task) -> None:
        """Drop zero-importance ranks, merge the rest into the base weight, leave the plain model."""
        ranks = {}
        for name, layer in self.layers.items():
            keep = layer.groups[-1].importance != 0
            ranks[name] = int(keep.sum())
            layer.prune_ranks(len(layer.groups) - 1, keep)  # drops the group whole when nothing is kept
            layer.merge_groups()
        self._history.append(ranks)

    def configure_optimizer(self, params) -> torch.optim.Optimizer:
        train, betas = self.ctx.train, tuple(self.config.betas)
        if train.optimizer == "adamw":
            return torch.optim.AdamW(params, lr=train.lr, weight_decay=train.weight_decay, betas=betas)
        if train.optimizer == "adam":
            return torch.optim.Adam(params, lr=train.lr, weight_decay=train.weight_decay, betas=betas)
        return super().configure_optimizer(params)

    # -- reporting -------------------------------------------------------------------------------------------
    def strategy_stats(self) -> dict:
        ranks = self._history[-1] if self._history else {}
        merged = [sum(h.get(name, 0) for h in self._history) for name in self.layers]
        return {
            "rank": self.config.rank,
            "adapted_layers": len(self.layers),
            "mean_effective_rank": round(sum(ranks.values()) / len(ranks), 3) if ranks else None,
            "effective_rank": ranks,
            "merged_rank_total": sum(merged),
            "final_kappa": self._kappa,
            "iterations": self.schedule.iterations if self.schedule else None,
            "kappa_step_iters": self.schedule.step if self.schedule else None,  # 0: too few iterations, κ never moves
            "added_inference_params": self.added_inference_parameters(),
        }

    # -- resume: the checkpoint holds the merged weights and no groups; keep the rank history ------------------
    def get_extra_state(self) -> dict:
        return {"history": self._history, "kappa": self._kappa}

    def set_extra_state(self, state: dict) -> None:
        self._history = [dict(h) for h in state["history"]]
        self._kappa = float(state["kappa"])
        for name, layer in self.layers.items():
            layer.prune_groups(list(range(len(layer.groups))))
            layer.merged_groups = sum(1 for h in self._history if h.get(name, 0) > 0)
