"""DyLoRA: dynamic search-free low-rank adaptation (Valipour, Rezagholizadeh, Kobyzev, Ghodsi; EACL 2023;
arXiv 2210.07558), framed for continual learning.

Official code huawei-noah/KD-NLP, folder ``DyLoRA`` (``loralib``: the ``dynamic`` truncation module and the LoRA
layers that use it). The stored snapshot of that repository (commit fda31b4037ebed6df8656751d40eb0f189ff311d) predates
the folder, so the ``dynamic`` module was read in a verbatim copy of ``dynamic.py`` (Huawei 2022 header) found in the
public code index, and the layer in a verbatim copy of its ``Linear``; the GLUE training script was not available.

Mechanism (one rank-``r`` LoRA per target linear, ``A`` kaiming-uniform, ``B`` zero):

* each training step samples one truncation rank ``b`` for all layers, uniform on ``{min_rank, …, r}`` (the paper's
  ``p_B``; the official scripts draw the 0-based index ``randint(min, r − 1)``);
* the forward uses the first ``b`` ranks only, scaled ``α / b``: the official ``dynamic`` module multiplies the
  truncated ``A`` and ``B`` each by ``√(r / b)`` on top of the layer's ``α / r``;
* ``frozen`` (the paper's update rule, default): only the ``b``-th rank receives a gradient; the first ``b − 1`` are
  detached (the official ``dynamic.frozen``). Here their gradients are zeroed between backward and the optimizer step,
  which gives the optimizer the same gradient tensor. ``frozen=false``: all first ``b`` ranks train;
* at ``b = r`` the layer is plain LoRA with scale ``α / r``.

Continual-learning framing (ours; the paper fine-tunes one task): every task trains a fresh DyLoRA; after the task
the kept rank ``b*`` is chosen, the first ``b*`` ranks are merged into the frozen weights with scale ``α / b*``, and the
next task starts a fresh group (incremental LoRA, merged, with DyLoRA's search-free rank choice per task). ``b*`` is
``keep_rank`` when set, else the paper's rule: the paper trains once and then reads off every rank, reporting the best
one on the dev set; the CL scenarios have no dev split, so ``select=best`` takes the rank with the lowest loss on
``select_batches`` batches of the task's training data (ties: the smaller rank), and ``select=max`` keeps ``r``.

Differences from the official code: no LoRA dropout; the classifier head of models that have one trains alongside,
as in every adapter strategy here; the rank is chosen on training data (see above).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from cl_suite.adapters import AdapterBankStrategy, AdapterLinear, RankGroup, inject
from cl_suite.api import Context, Task, TaskModel, to_device


def truncation_gate(rank: int, b: int, alpha: float, device=None, dtype=None) -> torch.Tensor:
    """Per-rank weights of DyLoRA's forward at truncation ``b``: ``α / b`` on the first ``b`` ranks, 0 after."""
    if not 1 <= b <= rank:
        raise ValueError(f"truncation rank must be in 1..{rank}, got {b}")
    gate = torch.zeros(rank, device=device, dtype=dtype)
    gate[:b] = alpha / b
    return gate


def set_truncation(group: RankGroup, b: int, alpha: float) -> None:
    """Make ``group`` compute with its first ``b`` ranks (its ``scale`` becomes a per-rank vector)."""
    group.scale = truncation_gate(group.rank, b, alpha, group.A.device, group.A.dtype)


@dataclass
class DyLoRAConfig:
    rank: int = 8  # r: the largest rank trained
    min_rank: int = 1  # smallest truncation rank sampled
    alpha: float = 16.0  # forward scale α / b
    frozen: bool = True  # the paper's rule: only the b-th rank trains at each step
    keep_rank: int = 0  # rank merged after each task; 0: chosen by `select`
    select: Literal["best", "max"] = "best"  # best: lowest loss on select_batches training batches; max: r
    select_batches: int = 4
    targets: tuple[str, ...] = ("q", "v")  # roles, "all" or name patterns (LoRA's default q, v)


class DyLoRA(AdapterBankStrategy):
    """Nested-rank LoRA trained by random truncation; after each task a chosen rank is merged into the weights."""

    supports = frozenset({"cil", "til", "dil", "fscil", "seg", "instr"})
    requires = frozenset({"linear_targets"})
    Config = DyLoRAConfig

    def __init__(self, config=None) -> None:
        super().__init__(config)
        self.layers: dict[str, AdapterLinear] = {}
        self.b = 0  # truncation rank of the current step
        self._history: list[dict] = []  # kept rank and per-rank selection losses, one entry per finished task

    def setup(self, model: TaskModel, ctx: Context) -> None:
        super().setup(model, ctx)
        c = self.config
        if not 1 <= c.min_rank <= c.rank:
            raise ValueError(f"need 1 <= strategy.min_rank <= strategy.rank, got {c.min_rank} and {c.rank}")
        if not 0 <= c.keep_rank <= c.rank:
            raise ValueError(f"strategy.keep_rank must be in 0..{c.rank} (0: chosen by select), got {c.keep_rank}")
        if c.select not in ("best", "max") or c.select_batches < 1:
            raise ValueError(f"strategy.select must be best or max and select_batches >= 1, got {c.select!r}, "
                             f"{c.select_batches}")  # fmt: skip
        model.requires_grad_(False)
        self.layers = inject(model, c.targets, backend=ctx.kernel_backend)

    def truncate(self, b: int) -> None:
        """Compute every layer with its current group's first ``b`` ranks."""
        self.b = b
        for layer in self.layers.values():
            set_truncation(layer.groups[-1], b, self.config.alpha)

    def sample_rank(self) -> int:
        """``b`` uniform on ``{min_rank, …, rank}`` (global torch RNG: the runner seeds it per task)."""
        c = self.config
        return int(torch.randint(c.min_rank, c.rank + 1, ()).item())

    # -- per task --------------------------------------------------------------------------------------------
    def before_task(self, task: Task) -> None:
        for layer in self.layers.values():
            if layer.groups:  # a task that ended without after_task (never in the runner): start clean
                layer.prune_groups(list(range(len(layer.groups))))
            layer.add_group(self.config.rank)
        self.truncate(self.config.rank)
        for p in self.model.head_parameters():
            p.requires_grad_(True)

    def training_step(self, batch, task: Task) -> torch.Tensor:
        self.truncate(self.sample_rank())
        return self.model.loss(batch, task)

    def after_backward(self) -> None:
        """Frozen mode: the first b − 1 ranks get no gradient (the official ``detach``)."""
        if not self.config.frozen or self.b <= 1:
            return
        for layer in self.layers.values():
            g = layer.groups[-1]
            if g.A.grad is not None:
                g.A.grad[:, : self.b - 1] = 0
            if g.B.grad is not None:
                g.B.grad[: self.b - 1] = 0

    @torch.no_grad()
    def rank_losses(self, task: Task) -> dict[int, float]:
        """Mean loss of every truncation rank on the first ``select_batches`` batches of the task's training data."""
        was_training = self.model.training
        self.model.eval()
        batches = []
        for i, batch in enumerate(self.ctx.loader(task.train)):
            if i >= self.config.select_batches:
                break
            batches.append(to_device(batch, self.ctx.device))
        losses = {}
        for b in range(self.config.min_rank, self.config.rank + 1):
            self.truncate(b)
            losses[b] = sum(float(self.model.loss(x, task)) for x in batches) / max(1, len(batches))
        self.model.train(was_training)
        return losses

    def kept_rank(self, task: Task) -> tuple[int, dict[int, float]]:
        c = self.config
        if c.keep_rank:
            return c.keep_rank, {}
        if c.select == "max":
            return c.rank, {}
        losses = self.rank_losses(task)
        return min(losses, key=lambda b: (losses[b], b)), losses

    @torch.no_grad()
    def after_task(self, task: Task) -> None:
        b, losses = self.kept_rank(task)
        self.truncate(b)
        for layer in self.layers.values():
            keep = torch.arange(self.config.rank) < b
            g = layer.groups[-1]
            g.scale = g.scale[keep]
            layer.prune_ranks(len(layer.groups) - 1, keep)
            layer.freeze()
            layer.merge_groups()
        self._history.append({"kept_rank": b, "losses": {str(k): round(v, 6) for k, v in losses.items()}})

    # -- reporting -------------------------------------------------------------------------------------------
    def strategy_stats(self) -> dict:
        last = self._history[-1] if self._history else {}
        return {"rank": self.config.rank, "adapted_layers": len(self.layers), "kept_rank": last.get("kept_rank"),
                "kept_ranks": [h["kept_rank"] for h in self._history], "rank_losses": last.get("losses", {}),
                "added_inference_params": self.added_inference_parameters()}  # fmt: skip

    # -- resume: the checkpoint holds the merged weights and no groups; keep the history -----------------------
    def get_extra_state(self) -> dict:
        return {"history": self._history}

    def set_extra_state(self, state: dict) -> None:
        self._history = [dict(h) for h in state["history"]]
        for layer in self.layers.values():
            layer.prune_groups(list(range(len(layer.groups))))
            layer.merged_groups = len(self._history)
