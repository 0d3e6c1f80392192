"""SEMA: self-expansion of a frozen pre-trained transformer with a mixture of adapters.

Wang, Lu, Yao, Gong, "Self-Expansion of Pre-trained Models with Mixture of Adapters for Continual Learning" (CVPR 2025,
arXiv 2403.18886); official code huiyiwang01/SEMA-CL (``models/sema.py``, ``backbone/sema_block.py``), read for the
mechanism and defaults (reference/strategies.md §1, §9.1). Our own implementation on the shared adapter layer.

Where: through ``model.blocks()``, a functional adapter ``up(ReLU(down(x)))`` runs in parallel to each chosen block's
MLP, reading the post-attention residual (the pre-MLP norm's *input*, a forward pre-hook) and adding to the MLP's
output (a forward hook). Blocks come from one tower (``tower``; CLIP's vision tower by default). The last
``expandable`` blocks of that tower hold a growing mixture: adapters mixed by a softmax router on the token mean,
each with a descriptor (strategies/sema/modules.py). Earlier blocks get one first-session adapter, trained on the first
task only (``first_session_adapters``). Widths scale from ViT-B's (768 → 16 → 768, descriptor 128) when
``scale_to_width``.

Per task (passes are runner passes through ``Strategy.next_round``, each with a fresh optimizer and schedule):

* task 0: pass "func" trains every adapter, router and the head with the task loss; pass "rd" trains the descriptors
  with their MSE (lr ``rd_lr``, ``rd_epochs``); then everything freezes.
* task t > 0: a detection scan (eval mode, batches of ``detect_batch``) runs the model; at each expandable block,
  shallow to deep, z-scores of the descriptor errors decide expansion, and the forward stops at the first block that
  expands. That block gets a new adapter + router column + descriptor: "func" then "rd" passes, freeze, and the scan
  restarts; a block expands at most once per task. If nothing expands, one pass trains the head only (no pass at all
  for models without a head, e.g. CLIP).
* inference: task-agnostic, one forward with the soft mixture at every block.

Defaults are the official code's behaviour (``variant="code"``): z = |r − μ|/σ averaged over the batch, then the
minimum over the block's adapters must exceed ``threshold``; the configured adapter scale 0.1 is never applied.
``variant="paper"``: signed z, a sample is novel when all its z exceed the threshold, a block expands when most of the
batch is novel (our reading: the paper states the per-sample rule only), and adapter outputs are scaled by
``adapter_scale``.

Differences from the official code, all small: the scan restarts from a fresh shuffled pass right after each
expansion's training (the official loop first finishes its current pass, then recurses); the runner's schedule is a
per-step cosine to 0 (official: per-epoch cosine to 1e-8); with a classifier head the loss is the official cross-entropy
over the current task's classes (``mask_old_classes``), otherwise the scenario's own loss (CLIP, LLM, segmentation);
the descriptor's input is detached in its pass (only descriptors are optimised there, so the update is the same); the
token mean of an LLM includes padding; no adapter dropout (configured but never applied in the official code either).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from cl_suite.api import BlockView, Context, Strategy, Task, TaskModel, make_optimizer, to_device
from cl_suite.models.classifier import head_loss
from strategies.sema.modules import SemaLayer, should_expand

REFERENCE_WIDTH = 768  # ViT-B/16, where the official sizes (bottleneck 16, descriptor 128) are set


@dataclass
class SEMAConfig:
    threshold: float = 1.0  # exp_threshold: 1 for ImageNet-A / VTAB, 2 for CIFAR-100 / ImageNet-R
    buffer_size: int = 500  # descriptor error buffer
    bottleneck: int = 16  # adapter width at ViT-B scale
    rd_dim: int = 128  # descriptor hidden width at ViT-B scale
    scale_to_width: bool = True  # scale bottleneck and rd_dim by width / 768 (at least 2)
    expandable: int = 3  # the last N blocks of the tower can expand (ViT-B: blocks 9-11)
    first_session_adapters: bool = True  # earlier blocks get one adapter trained on the first task
    tower: int = 0  # which block stack (grouped by owning module; CLIP: 0 vision, 1 text)
    rd_lr: float = 0.01
    rd_epochs: int = 0  # epochs of the descriptor pass; 0: the run's train.epochs (official: 20 = func_epoch)
    detect_batch: int = 128
    mask_old_classes: bool = True  # with a classifier head: CE over the current task's classes only (official)
    variant: Literal["code", "paper"] = "code"  # expansion rule and adapter scale: official code or paper
    adapter_scale: float = 0.1  # applied only with variant=paper


class _StopForward(Exception):
    """Raised by a hook to end a forward early (detection found a block; the descriptor pass is done)."""

    def __init__(self, block: int | None = None, statistic: float = 0.0) -> None:
        super().__init__(block)
        self.block, self.statistic = block, statistic


def block_width(view: BlockView) -> int:
    shape = getattr(view.norm, "normalized_shape", None)
    return int(shape[-1]) if shape else int(view.norm.weight.shape[-1])


def scaled(n: int, width: int) -> int:
    """A ViT-B size scaled to ``width`` (at least 2): bottleneck 16 -> 3 and descriptor 128 -> 21 at width 128."""
    return max(2, round(n * width / REFERENCE_WIDTH))


def towers(model: nn.Module, views: list[BlockView]) -> list[list[BlockView]]:
    """Blocks grouped by the module owning their container (CLIP: vision tower, text tower), in ``views`` order."""
    names = {id(m): n for n, m in model.named_modules()}
    groups: dict[str, list[BlockView]] = {}
    for v in views:
        name = names.get(id(v.block), "")
        owner = name.rsplit(".", 2)[0] if name.count(".") >= 2 else ""
        groups.setdefault(owner, []).append(v)
    return list(groups.values())


class SEMA(Strategy):
    """Self-expanding mixture of adapters on the blocks of a frozen transformer (task-agnostic inference)."""

    supports = frozenset({"cil", "til", "dil", "fscil", "seg", "instr"})
    requires = frozenset({"blocks"})
    train_defaults = {"optimizer": "sgd", "lr": 0.005, "momentum": 0.9, "weight_decay": 5e-4, "scheduler": "cosine"}
    Config = SEMAConfig

    def __init__(self, config=None) -> None:
        super().__init__(config)
        self.layers = nn.ModuleDict()
        self._views: dict[str, BlockView] = {}
        self._hooks: list = []
        self._mode = "off"  # off | detect | rd
        self._inputs: dict[str, torch.Tensor] = {}
        self._rd_losses: list[torch.Tensor] = []
        self.phase = "func"  # func | rd | head
        self.round: list[str] = []  # layers whose newest adapter trains in this round
        self._expanded: list[int] = []
        self._trained = 0

    # -- setup -----------------------------------------------------------------------------------------------
    def setup(self, model: TaskModel, ctx: Context) -> None:
        super().setup(model, ctx)
        c = self.config
        if c.variant not in ("code", "paper"):
            raise ValueError(f"strategy.variant must be 'code' or 'paper', got {c.variant!r}")
        if c.buffer_size < 3 or c.bottleneck < 1 or c.rd_dim < 1 or c.expandable < 0 or c.detect_batch < 1:
            raise ValueError("strategy.buffer_size must be >= 3, bottleneck/rd_dim/detect_batch >= 1, expandable >= 0")
        stacks = towers(model, model.blocks())
        if not 0 <= c.tower < len(stacks):
            raise ValueError(f"strategy.tower={c.tower}, but the model has {len(stacks)} block stack(s); accepted: "
                             f"0..{len(stacks) - 1}")  # fmt: skip
        chosen = stacks[c.tower]
        first_expandable = max(0, len(chosen) - c.expandable)
        model.requires_grad_(False)
        for pos, view in enumerate(chosen):
            expandable = pos >= first_expandable
            if not expandable and not c.first_session_adapters:
                continue
            width = block_width(view)
            bottleneck, rd_dim = (scaled(n, width) if c.scale_to_width else n for n in (c.bottleneck, c.rd_dim))
            key = str(view.index)
            self.layers[key] = SemaLayer(view.index, width, bottleneck, rd_dim, c.buffer_size, expandable,
                                         ctx.kernel_backend)  # fmt: skip
            self.layers[key].add_adapter()  # the first session's adapters exist from the start (checkpoints match)
            self._views[key] = view
            self._hooks.append(view.norm.register_forward_pre_hook(self._read_hook(key)))
            self._hooks.append(view.mlp.register_forward_hook(self._add_hook(key)))
        if not self.layers:
            raise ValueError("SEMA adapts no block: set strategy.expandable >= 1 or first_session_adapters=true")

    # -- hooks -----------------------------------------------------------------------------------------------
    def _read_hook(self, key: str):
        """Pre-hook on the block's pre-MLP norm: keep the residual stream; record, detect or train descriptors."""

        def hook(norm: nn.Module, args) -> None:
            x = args[0]
            self._inputs[key] = x
            layer = self.layers[key]
            if not layer.expandable:
                return
            pooled = x.mean(dim=1) if x.dim() == 3 else x
            if layer.training:  # errors are recorded in training mode only, by descriptors not yet frozen
                with torch.no_grad():
                    for d in layer.descriptors:
                        if bool(d.updating):
                            d.record(d.error(pooled.detach()))
            if self._mode == "detect":
                self._detect(layer, pooled)
            elif self._mode == "rd" and key in self.round:
                self._rd_losses.append(layer.descriptors[-1].error(pooled.detach()).mean())
                if key == self.round[-1]:
                    raise _StopForward()

        return hook

    def _detect(self, layer: SemaLayer, pooled: torch.Tensor) -> None:
        if layer.added_this_task or not len(layer.descriptors):
            return
        z = torch.stack([d.zscore(d.error(pooled)) for d in layer.descriptors])
        expand, stat = should_expand(z, self.config.threshold, self.config.variant)
        if expand:
            raise _StopForward(layer.block_index, stat)

    def _add_hook(self, key: str):
        """Forward hook on the block's MLP: add the adapters' mixture of the post-attention residual."""

        def hook(mlp: nn.Module, args, output: torch.Tensor) -> torch.Tensor:
            x = self._inputs.pop(key, None)
            if x is None:
                raise RuntimeError(f"SEMA: block {key}'s MLP ran without its pre-MLP norm; blocks() view mismatch")
            mixed = self.layers[key].mixture(x)
            if self.config.variant == "paper":
                mixed = mixed * self.config.adapter_scale
            return output + mixed.to(output.dtype)

        return hook

    # -- the task: detection, rounds, freezing ---------------------------------------------------------------
    def _first_session(self) -> bool:
        first = next(iter(self.layers.values()))
        return first.mixture.experts[0].up.requires_grad

    @torch.no_grad()
    def _scan(self, task: Task) -> tuple[int, float] | None:
        """Detection pass over the task's training data; returns (block, statistic) of the first expansion."""
        was_training = self.training
        self.eval()
        self._mode = "detect"
        try:
            for batch in self.ctx.loader(task.train, shuffle=True, batch_size=self.config.detect_batch):
                try:
                    self.model.loss(to_device(batch, self.ctx.device), task)
                except _StopForward as hit:
                    return hit.block, hit.statistic
                finally:
                    self._inputs.clear()
            return None
        finally:
            self._mode = "off"
            self.train(was_training)

    def _expand_or_finish(self, task: Task) -> bool:
        """Scan; on a trigger add an adapter to that block and start its "func" round. True if it expanded."""
        hit = self._scan(task)
        if hit is None:
            return False
        block, stat = hit
        key = str(block)
        self.layers[key].add_adapter()
        self.layers[key].added_this_task = True
        self.round, self.phase = [key], "func"
        self._expanded.append(block)
        self.ctx.log(event="sema_expand", block=block, statistic=round(stat, 4),
                     adapters=self.layers[key].num_adapters)  # fmt: skip
        return True

    def before_task(self, task: Task) -> None:
        head = self.model.head_parameters()
        for p in head:
            p.requires_grad_(True)
        self._expanded, self._trained = [], 0
        self.trains = True
        if self._first_session():  # the first task trains every adapter and never expands (official)
            self.round, self.phase = list(self.layers), "func"
            for layer in self.layers.values():
                layer.added_this_task = True
        elif not self._expand_or_finish(task):
            self.round, self.phase = [], "head"
            self.trains = bool(head)  # nothing to train without a head (CLIP, LLM): the task is skipped

    def next_round(self, task: Task) -> int | None:
        epochs = self.ctx.train.epochs
        if self.phase == "func" and any(self.layers[k].expandable for k in self.round):
            self.phase = "rd"
            self.round = [k for k in self.round if self.layers[k].expandable]
            return self.config.rd_epochs or epochs
        if self.phase in ("func", "rd"):
            for key in self.round:
                self.layers[key].freeze()
            if self._expand_or_finish(task):
                return epochs
        return None

    def after_task(self, task: Task) -> None:
        for layer in self.layers.values():
            layer.freeze()
            layer.added_this_task = False
        self.round, self.phase = [], "func"

    # -- training --------------------------------------------------------------------------------------------
    def trainable_parameters(self):
        if self.phase == "rd":
            params = [p for k in self.round for p in self.layers[k].descriptors[-1].parameters() if p.requires_grad]
        else:
            params = [p for k in self.round for p in self.layers[k].newest_parameters()]
            params += [p for p in self.model.head_parameters() if p.requires_grad]
        self._trained = max(self._trained, sum(p.numel() for p in params))
        return iter(params)

    def configure_optimizer(self, params) -> torch.optim.Optimizer:
        train = self.ctx.train
        if self.phase == "rd":
            train = dataclasses.replace(train, lr=self.config.rd_lr)
        return make_optimizer(params, train)

    def training_step(self, batch, task: Task) -> torch.Tensor:
        if self.phase == "rd":
            self._mode, self._rd_losses = "rd", []
            try:
                self.model.loss(batch, task)
            except _StopForward:
                pass
            finally:
                self._mode = "off"
                self._inputs.clear()
            return torch.stack(self._rd_losses).sum()
        return self._task_loss(batch, task)

    def _task_loss(self, batch, task: Task) -> torch.Tensor:
        """The official CE over the current task's classes when there is a classifier head, else the model's loss."""
        return head_loss(self.model, batch, task, "auto" if self.config.mask_old_classes else "model")

    # -- reporting -------------------------------------------------------------------------------------------
    def added_inference_parameters(self) -> int:
        return sum(layer.inference_parameters() for layer in self.layers.values())

    def strategy_stats(self) -> dict:
        return {
            "adapters_per_block": {k: layer.num_adapters for k, layer in self.layers.items()},
            "expanded_blocks": list(self._expanded),
            "expansions": len(self._expanded),
            "trainable_params": self._trained,
            "added_inference_params": self.added_inference_parameters(),
            "descriptor_params": sum(p.numel() for layer in self.layers.values() for p in layer.descriptors.parameters()),
        }

    # -- resume: rebuild the grown structure before the tensors load -----------------------------------------
    def get_extra_state(self) -> dict:
        return {"adapters": {k: layer.num_adapters for k, layer in self.layers.items()}}

    def set_extra_state(self, state: dict) -> None:
        for key, n in state["adapters"].items():
            layer = self.layers[key]
            while layer.num_adapters < n:
                layer.add_adapter()
            layer.freeze()  # checkpoints are written after a task, when everything is frozen
