"""CoSO: continuous subspace optimization for continual learning (Cheng, Wan, Wu, Hou, Zhang; NeurIPS 2025;
arXiv 2505.11816; official code quinn-ch/CoSO, read for the mechanism and defaults: reference/strategies.md §4, §9.4).

Full-rank training of the attention output projections (role ``o``; the official ``attn.proj.weight``, bias frozen)
through :class:`CoSOAdamW`: each step removes the gradient's component in the layer's historical basis ``M``, steps
with Adam inside the top-r1 left singular subspace of what remains (refreshed every K steps), and feeds the same SVD
to a rank-r2 Frequent Directions sketch (:class:`HistoricalSubspace`). At the task boundary the sketch's directions up
to energy ε are appended to ``M``, so later tasks update the weight orthogonally (Frobenius inner product) to the
gradient subspace of earlier ones. Everything else is frozen except the scenario's per-task heads.

Defaults come from the official ``exps/*.json`` (``preset``: cifar, inr (the default; ImageNet-R 5/10/20 tasks) or
domainnet), and r1 and r2 are scaled from the official ViT-B width 768 to each layer: ``round(r · min(out, in) / 768)``,
at least 1, with r2 < min(out, in) (the sketch shrinks by its (r2+1)-th singular value). Explicit
``strategy.proj_rank`` / ``sketch_rank`` are taken as they are.

Loss: on classifier scenarios (a trained head over a global label space, ``model.logits``) the official per-task head
loss: cross-entropy over the current task's classes only (other samples dropped, targets made local), logits divided
by ``temperature`` (3). The head's rows of earlier tasks get no gradient, so (with weight decay 0) they stay as they
were, like the official frozen ``classifier_pool`` heads; inference concatenates all seen classes (the model's own
``predict``). Scenarios without such a head (CLIP, LLMs, segmentation with its own per-task heads) use their own loss.

Differences from the official code (all documented in the README):
- the boundary (append the sketch to ``M``) runs in ``after_task`` rather than at the start of the next task; training
  is identical, but ``M`` after the last task also holds that task (so the reported basis sizes count every task);
- the learning-rate schedule is the runner's (per step, cosine by default for this strategy) instead of per epoch, and
  the head's learning rate is ``train.lr`` unless ``strategy.head_lr`` is set (the inr preset uses equal rates);
- the numerical guards of :mod:`strategies.coso.optimizer` (no-ops in exact arithmetic on full-rank gradients).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from cl_suite.adapters import select_targets
from cl_suite.api import Context, Strategy, Task, TaskModel
from strategies.coso.optimizer import CoSOAdamW
from strategies.coso.subspace import HistoricalSubspace
from strategies.task_head import has_task_head, task_head_loss

REFERENCE_WIDTH = 768  # ViT-B/16, the width the official ranks were chosen for
PRESETS = {  # official exps/*.json: proj_rank (r1), rank (r2), update_gap (K)
    "cifar": {"proj_rank": 15, "sketch_rank": 100, "update_gap": 1},
    "inr": {"proj_rank": 50, "sketch_rank": 120, "update_gap": 1},
    "domainnet": {"proj_rank": 70, "sketch_rank": 160, "update_gap": 20},
}


@dataclass
class CoSOConfig:
    preset: str = "inr"  # official config the ranks and gap come from: cifar, inr, domainnet
    proj_rank: int = 0  # r1; 0: the preset's, scaled to each layer
    sketch_rank: int = 0  # r2; 0: the preset's, scaled to each layer
    update_gap: int = 0  # K (steps between projector refreshes); 0: the preset's
    threshold: float = 0.98  # ε: energy of the sketch kept in the historical basis at a boundary
    decay: float = 1.0  # FD decay of the old sketch
    temperature: float = 3.0  # logits / temperature in the per-task head loss
    eps: float = 1e-6  # AdamW eps (HF style: added to √v)
    head_lr: float = 0.0  # learning rate of the head; 0: train.lr
    targets: tuple[str, ...] = ("o",)  # roles or name patterns of the weights trained through CoSO
    loss: str = "auto"  # auto | task_head (per-task head, temperature) | model (the scenario's own loss)


def scaled_rank(reference: int, width: int, cap: int) -> int:
    """An official rank chosen for width 768, scaled to ``width`` (at least 1, at most ``cap``)."""
    return max(1, min(cap, round(reference * width / REFERENCE_WIDTH)))


class CoSO(Strategy):
    """Full-rank o-projection training in a per-step gradient subspace orthogonal to a growing historical basis."""

    supports = frozenset({"cil", "til", "dil", "fscil", "seg", "instr"})
    requires = frozenset({"linear_targets"})
    train_defaults = {"scheduler": "cosine"}
    Config = CoSOConfig

    def __init__(self, config=None) -> None:
        super().__init__(config)
        c = self.config
        if c.preset not in PRESETS:
            raise ValueError(f"unknown strategy.preset {c.preset!r}; accepted: {', '.join(PRESETS)}")
        if c.loss not in ("auto", "task_head", "model"):
            raise ValueError(f"unknown strategy.loss {c.loss!r}; accepted: auto, task_head, model")
        if not 0 < c.threshold <= 1 or c.temperature <= 0 or min(c.proj_rank, c.sketch_rank, c.update_gap) < 0:
            raise ValueError("strategy.threshold must be in (0, 1], temperature > 0, ranks and update_gap >= 0")
        self.layers: dict[str, nn.Linear] = {}  # the modules whose weight CoSO trains
        self.subspaces: dict[str, HistoricalSubspace] = {}
        self.ranks: dict[str, int] = {}  # r1 per layer
        self.added: dict[str, int] = {}  # directions the last boundary appended

    # -- setup -----------------------------------------------------------------------------------------------
    def setup(self, model: TaskModel, ctx: Context) -> None:
        super().setup(model, ctx)
        c, preset = self.config, PRESETS[self.config.preset]
        if ctx.train.optimizer != "adamw":
            raise ValueError(f"coso steps with its own projected AdamW; train.optimizer must be adamw, got {ctx.train.optimizer!r}")
        model.requires_grad_(False)
        for name, module in select_targets(model, c.targets):
            out, inp = module.weight.shape
            width = min(out, inp)
            r2 = c.sketch_rank or scaled_rank(preset["sketch_rank"], width, width - 1)
            if not 1 <= r2 < width:
                raise ValueError(f"strategy.sketch_rank={r2} must be below min(out, in)={width} of {name}")
            self.ranks[name] = c.proj_rank or scaled_rank(preset["proj_rank"], width, width)
            self.subspaces[name] = HistoricalSubspace(out, r2, c.decay, device=module.weight.device,
                                                      dtype=module.weight.dtype)
            self.layers[name] = module
            module.weight.requires_grad_(True)

    def _apply(self, fn, recurse: bool = True):
        """Keep the bases on the model's device when the runner moves the strategy."""
        result = super()._apply(fn, recurse)
        for name, sub in self.subspaces.items():
            sub.basis = sub.basis.to(self.layers[name].weight.device)
        return result

    def before_task(self, task: Task) -> None:
        for p in self.model.head_parameters():
            p.requires_grad_(True)

    def trainable_parameters(self):
        heads = [p for p in self.model.head_parameters() if p.requires_grad]
        return iter([*(layer.weight for layer in self.layers.values()), *heads])

    def configure_optimizer(self, params) -> torch.optim.Optimizer:
        c, train = self.config, self.ctx.train
        coso = {id(layer.weight) for layer in self.layers.values()}
        others = [p for p in params if id(p) not in coso]
        groups = [{"params": [layer.weight], "subspace": self.subspaces[name], "proj_rank": self.ranks[name],
                   "update_gap": c.update_gap or PRESETS[c.preset]["update_gap"]}
                  for name, layer in self.layers.items()]  # fmt: skip
        if others:
            groups.append({"params": others, "lr": c.head_lr or train.lr, "weight_decay": train.weight_decay})
        return CoSOAdamW(groups, lr=train.lr, eps=c.eps)

    # -- loss ------------------------------------------------------------------------------------------------
    def _uses_task_head(self, task: Task) -> bool:
        if self.config.loss == "task_head" and not callable(getattr(self.model, "logits", None)):
            raise ValueError("strategy.loss=task_head needs a model with logits (a classifier); use auto or model")
        if self.config.loss != "auto":
            return self.config.loss == "task_head"
        return has_task_head(self.model, task)

    def training_step(self, batch, task: Task) -> torch.Tensor:
        if not self._uses_task_head(task):
            return self.model.loss(batch, task)
        return task_head_loss(self.model, batch, task, self.config.temperature)

    # -- boundary --------------------------------------------------------------------------------------------
    def after_task(self, task: Task) -> None:
        self.added = {name: sub.close_task(self.config.threshold) for name, sub in self.subspaces.items()}
        for name, sub in self.subspaces.items():
            self.ctx.log(event="coso_boundary", layer=name, added=self.added[name], basis=sub.size)
        for p in self.model.head_parameters():
            p.requires_grad_(False)

    def strategy_stats(self) -> dict:
        """Historical basis size per layer after the task (the official log's "historical projector shape")."""
        sizes = {name: sub.size for name, sub in self.subspaces.items()}
        return {"basis_size": sizes, "basis_total": sum(sizes.values()), "added_total": sum(self.added.values()),
                "proj_rank": sorted(set(self.ranks.values())),
                "sketch_rank": sorted({sub.sketch_rank for sub in self.subspaces.values()})}  # fmt: skip

    # -- resume: the bases grow per task, so they travel as extra state --------------------------------------
    def get_extra_state(self) -> dict:
        return {"bases": {name: sub.basis.detach().cpu() for name, sub in self.subspaces.items()},
                "added": dict(self.added)}  # fmt: skip

    def set_extra_state(self, state: dict) -> None:
        for name, basis in state["bases"].items():
            if name not in self.subspaces:
                raise ValueError(f"checkpoint has a CoSO basis for {name!r}, which this model does not target")
            self.subspaces[name].basis = basis.to(self.layers[name].weight.device)
        self.added = dict(state.get("added", {}))
