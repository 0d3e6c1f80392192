"""InfLoRA: interference-free low-rank adaptation for continual learning (Liang & Li, CVPR 2024).

Official code liangyanshuo/InfLoRA at commit e08b00edd54f2f10cf2f9826eae7d44fdcb6354b (``methods/inflora.py``,
``models/vit_inflora.py``, ``models/sinet_inflora.py``, ``configs/*_inflora.json``), read item by item; our own
implementation on the shared adapter layer (reference/strategies.md §6.2).

Per task ``t``, every target linear (the key and value projections: official LoRA on ``k`` and ``v`` of each ViT
block's qkv) gets a new rank-``r`` group ``ΔW_t = A_t B_t`` with no scaling (the official ``lora_B(lora_A(x))``):

1. before training, one pass over the task's training data collects each layer's input covariance ``E[x xᵀ]`` (mean
   over every token of every sample, the official ``cur_matrix``), with the earlier tasks' adapters in place;
2. the covariance is projected off the old tasks' input space held by :class:`strategies.dualgpm.DualGPM`
   (``C − M Mᵀ C``, or ``M Mᵀ C`` when the layer keeps the complement), and ``A_t`` is set to its top-``r`` left
   singular vectors divided by √3 (official ``U[:, :r].T / sqrt(3)``; task 0 uses the unprojected covariance);
3. ``A_t`` stays frozen and only ``B_t`` is trained (official: ``requires_grad`` only on ``lora_B_k/v.{t}`` and
   ``classifier_pool.{t}``), so the update ``A_t B_t`` only reads the part of the input outside the old tasks' space;
4. after training, a second pass collects the covariance again (now with the trained adapter), DualGPM grows the
   protected space with threshold ``lamb + (lame − lamb) · t / T``, and the group is merged into the frozen weight
   (the official code keeps ``Σ_s B_s A_s`` as a sum; merging it is the same function at no inference cost).

Classifier (PILOT-style class-incremental ViT scenarios): the official per-task heads, trained with cross-entropy
over the current task's classes only, concatenated at inference (:mod:`strategies.task_head`); scenarios without a
head (CLIP, LLMs) use their own loss. Defaults from ``configs/mimg10_inflora.json`` (ImageNet-R): rank 10, lamb 0.98
(0.95 in the CIFAR-100 and DomainNet configs), lame 1.0, Adam lr 5e-4 betas (0.9, 0.999), weight decay 0, cosine
schedule; the epochs (official 50 for ImageNet-R, 20 for CIFAR-100) and batch size (128) are the scenario's.

Differences from the official code (also in the README):
- the learning-rate schedule is the runner's per-step cosine (official: per-epoch cosine);
- the covariance passes run in eval mode (official: whatever mode the network is in; its ViT has no dropout) and
  accumulate in float64; DualGPM's SVDs run in float64 (official float32);
- the official ``clustering`` step (k-means keys after each task) is skipped: InfLoRA's evaluation never reads them;
- DualGPM's first-task ``retain`` case stores the complement (see :mod:`strategies.dualgpm`);
- ``reproject`` (off by default, official behaviour) projects ``A_t`` once more off the protected space: when a layer
  is so narrow that the projected covariance has rank below ``r`` (never on the official 768-wide ViT-B), the
  trailing singular vectors are arbitrary and may lie in the protected space; ``strategy_stats`` counts such layers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from cl_suite.adapters import AdapterBankStrategy, AdapterLinear, inject
from cl_suite.api import Context, Task, TaskModel, to_device
from strategies.dualgpm import DualGPM, threshold
from strategies.task_head import has_task_head, task_head_loss


@dataclass
class InfLoRAConfig:
    rank: int = 10  # r of each task's LoRA
    lamb: float = 0.98  # DualGPM threshold at task 0 (ImageNet-R; 0.95 for CIFAR-100 / DomainNet)
    lame: float = 1.0  # threshold reached at task T
    targets: tuple[str, ...] = ("k", "v")  # roles or name patterns; official: key and value
    scan_batches: int = 0  # batches of each covariance pass; 0: the whole training set (official)
    reproject: bool = False  # project A_t off the protected space once more (not in the official code)
    loss: str = "auto"  # auto | task_head (official per-task head CE) | model (the scenario's own loss)


class CovarianceRecorder:
    """Forward pre-hooks that accumulate ``Σ x xᵀ`` and the token count of each layer's input while enabled."""

    def __init__(self, layers: dict[str, AdapterLinear]) -> None:
        self.sums: dict[str, torch.Tensor] = {}
        self.counts: dict[str, int] = {}
        self.handles = [layer.register_forward_pre_hook(self._hook(name)) for name, layer in layers.items()]

    def _hook(self, name: str):
        def hook(module: nn.Module, args) -> None:
            x = args[0].detach().reshape(-1, args[0].shape[-1]).to(torch.float64)
            s = x.t() @ x
            self.sums[name] = self.sums[name] + s if name in self.sums else s
            self.counts[name] = self.counts.get(name, 0) + x.shape[0]

        return hook

    def covariances(self) -> dict[str, torch.Tensor]:
        return {name: s / self.counts[name] for name, s in self.sums.items()}

    def close(self) -> None:
        for h in self.handles:
            h.remove()


class InfLoRA(AdapterBankStrategy):
    """A new LoRA per task whose frozen down-projection avoids the old tasks' input space; only B trains."""

    supports = frozenset({"cil", "til", "dil", "fscil", "seg", "instr"})
    requires = frozenset({"linear_targets"})
    train_defaults = {"optimizer": "adam", "lr": 5e-4, "weight_decay": 0.0, "scheduler": "cosine"}
    Config = InfLoRAConfig

    def __init__(self, config=None) -> None:
        super().__init__(config)
        self.layers: dict[str, AdapterLinear] = {}
        self.spaces: dict[str, DualGPM] = {}
        self._deficient = 0
        self._added: dict[str, int] = {}

    def setup(self, model: TaskModel, ctx: Context) -> None:
        super().setup(model, ctx)
        c = self.config
        if c.rank < 1 or c.scan_batches < 0:
            raise ValueError(
                f"strategy.rank must be >= 1 and strategy.scan_batches >= 0, got {c.rank}, {c.scan_batches}"
            )
        if not 0 < c.lamb <= 1 or not 0 < c.lame <= 1:
            raise ValueError(f"strategy.lamb and strategy.lame must be in (0, 1], got {c.lamb} and {c.lame}")
        if c.loss not in ("auto", "task_head", "model"):
            raise ValueError(f"unknown strategy.loss {c.loss!r}; accepted: auto, task_head, model")
        model.requires_grad_(False)
        self.layers = inject(model, c.targets, backend=ctx.kernel_backend)
        self.spaces = {name: DualGPM() for name in self.layers}

    # -- covariance passes -----------------------------------------------------------------------------------
    @torch.no_grad()
    def input_covariances(self, task: Task) -> dict[str, torch.Tensor]:
        """``E[x xᵀ]`` of every adapted layer's input over the task's training data (the official ``cur_matrix``)."""
        recorder = CovarianceRecorder(self.layers)
        was_training = self.model.training
        self.model.eval()
        try:
            for i, batch in enumerate(self.ctx.loader(task.train)):
                if self.config.scan_batches and i >= self.config.scan_batches:
                    break
                self.model.loss(to_device(batch, self.ctx.device), task)
        finally:
            recorder.close()
            self.model.train(was_training)
        return recorder.covariances()

    @torch.no_grad()
    def down_projection(self, name: str, cov: torch.Tensor) -> torch.Tensor:
        """``A_t`` (d_in × r): top-r left singular vectors of the projected covariance, divided by √3."""
        space = self.spaces[name]
        projected = space.project(cov)
        u, s, _ = torch.linalg.svd(projected, full_matrices=False)
        r = self.config.rank
        if int((s > s.max() * 1e-10).sum()) < r:
            self._deficient += 1
        a = u[:, :r] / math.sqrt(3)
        if self.config.reproject and (p := space.protected_projector()) is not None:
            a = a - p.to(a) @ a
        return a

    # -- per task --------------------------------------------------------------------------------------------
    def before_task(self, task: Task) -> None:
        c = self.config
        for layer in self.layers.values():
            if layer.groups:  # a task that ended without after_task (never in the runner): start clean
                layer.prune_groups(list(range(len(layer.groups))))
            layer.add_group(c.rank)  # scale 1: the official ΔW = B A has no alpha / r
        self._deficient = 0
        covs = self.input_covariances(task)
        for name, layer in self.layers.items():
            group = layer.groups[-1]
            if name in covs:  # a layer the forward never reached keeps its kaiming A (it sees no input)
                group.A.data.copy_(self.down_projection(name, covs[name]).to(group.A))
            group.A.requires_grad_(False)
        for p in self.model.head_parameters():
            p.requires_grad_(True)

    def _uses_task_head(self, task: Task) -> bool:
        if self.config.loss != "auto":
            return self.config.loss == "task_head"
        return has_task_head(self.model, task)

    def training_step(self, batch, task: Task) -> torch.Tensor:
        if self._uses_task_head(task):
            return task_head_loss(self.model, batch, task)
        return self.model.loss(batch, task)

    @torch.no_grad()
    def after_task(self, task: Task) -> None:
        covs = self.input_covariances(task)
        thresh = threshold(task.index, self.ctx.num_tasks, self.config.lamb, self.config.lame)
        self._added = {name: self.spaces[name].update(cov, thresh) for name, cov in covs.items()}
        for layer in self.layers.values():
            layer.freeze()
            layer.merge_groups()
        for p in self.model.head_parameters():
            p.requires_grad_(False)

    # -- reporting -------------------------------------------------------------------------------------------
    def strategy_stats(self) -> dict:
        protected = {name: space.protected for name, space in self.spaces.items()}
        return {"rank": self.config.rank, "adapted_layers": len(self.layers),
                "protected_dims": protected, "protected_total": sum(protected.values()),
                "kinds": sorted({space.kind for space in self.spaces.values() if space.basis is not None}),
                "rank_deficient_layers": self._deficient,
                "added_inference_params": self.added_inference_parameters()}  # fmt: skip

    # -- resume: the checkpoint holds the merged weights and no groups; the DualGPM bases travel as extra state --
    def get_extra_state(self) -> dict:
        return {"bases": {n: s.basis.detach().cpu() for n, s in self.spaces.items() if s.basis is not None},
                "kinds": {n: s.kind for n, s in self.spaces.items()}}  # fmt: skip

    def set_extra_state(self, state: dict) -> None:
        for name, layer in self.layers.items():
            layer.prune_groups(list(range(len(layer.groups))))
            self.spaces[name] = DualGPM(state["bases"].get(name), state["kinds"].get(name, "remove"))
