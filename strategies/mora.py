"""MoRA / MoRAM: continual learning with a self-activated sparse mixture of rank-1 experts ("atoms").

Lu et al., "Little By Little: Continual Learning via Self-Activated Sparse Mixture-of-Rank Adaptive Learning"
(arXiv 2506.21035), republished as MoRAM (ICML 2026); official code Artificer-AI-Lab/MoRAM (``XTAIL/loralib/moram.py``
for CLIP, ``TRACE/utils/my_peft/tuners/moram.py`` for LLMs), read for the mechanism and defaults
(reference/strategies.md §2 and §9.2). Our own implementation on the shared adapter layer.

Every target linear becomes an :class:`cl_suite.adapters.AdapterLinear` in ``topk`` gate mode. Each task appends one
group of ``r`` rank-1 atoms (A kaiming-uniform, B zero); earlier groups are frozen and keep contributing. Per token,
over the whole bank ``A`` (old and new atoms): ``z = x·A``, ``s = z/‖z‖``, keep the ``max(k, 2)`` largest signed
``s`` (capped at the bank size, as the LLM code does), ``w = softmax(top-k(s)/τ)``, at inference only ``w ← w·1[s ≥ δ]``
(no renormalisation), and ``y = x·W0ᵀ + b + (scale · w ⊙ z)·B``: the raw ``z`` is weighted, there is no router and no
task id. All atoms of a layer run as one fused-op call (the gate needs ``z`` first, one extra ``x·A``).

Defaults per family (``family=auto``: ``llm`` in the ``instr`` setting, ``clip`` otherwise), from the official runners:
clip r=16, k=16, τ=0.01, δ=0.2, scale 1, roles q,k,v,o,fc1,fc2 (both towers), AdamW β=(0.9, 0.9999); llm r=8, k=8,
τ=0.03, δ=0.2, scale alpha/r=2, roles q,k,v,o, Adam β=(0.9, 0.95) (``TRACE/training/main.py``). Both: lr 5e-4, wd 0,
cosine schedule, task loss only.

Options where the official code and the paper (or the two codes) differ:

* ``bank_scale``: the LLM code trains the current atoms with B scaled by 2 but freezes B unscaled, so a task's
  contribution halves once frozen (§2.4). ``kept`` (default, the corrected behaviour) keeps each group's training
  scale; ``official`` reproduces the halving. The CLIP family has scale 1 and is unaffected.
* ``increment``: when the next task's fresh atoms join the bank. The CLIP code evaluates before the increment
  (``before_task``, its default); the LLM code increments at the end of every task and evaluates from that state
  (``after_task``, its default), so fresh atoms (B=0) take top-k slots and softmax weight at evaluation.

Simplifications: no LoRA dropout (the LLM code uses 0.1 on the adapter input; the fused op shares ``x`` between the
frozen linear and the atoms); the normalisation epsilon is torch's 1e-12 for both families (the LLM code uses 1e-8);
the CLIP text→image loss term is the scenario's ``text_loss`` option, which this strategy sets to the
official runner's (weight 1, ``text_loss_form=official``) through ``scenario_defaults``; ``--set scenario.text_loss=0``
turns it off.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Literal

import torch
from torch import nn

from cl_suite.adapters import AdapterBankStrategy, AdapterLinear, inject
from cl_suite.api import Context, Task, TaskModel
from cl_suite.models.classifier import head_loss

FAMILIES = {
    "clip": {"rank": 16, "topk": 16, "temperature": 0.01, "threshold": 0.2, "scale": 1.0,
             "targets": ("q", "k", "v", "o", "fc1", "fc2"), "betas": (0.9, 0.9999), "increment": "before_task"},
    "llm": {"rank": 8, "topk": 8, "temperature": 0.03, "threshold": 0.2, "scale": 2.0,
            "targets": ("q", "k", "v", "o"), "betas": (0.9, 0.95), "increment": "after_task"},
}  # fmt: skip


@dataclass
class MoRAConfig:
    family: Literal["auto", "clip", "llm"] = "auto"  # auto: llm in the instr setting, clip otherwise
    rank: int | None = None  # r: new atoms per task per layer (clip 16, llm 8)
    topk: int | None = None  # activation budget over the whole bank; max(topk, 2) is used (clip 16, llm 8)
    temperature: float | None = None  # τ of the sparse softmax (clip 0.01, llm 0.03)
    threshold: float | None = None  # δ: inference-only pruning of atoms with s < δ; 0 disables (0.2)
    scale: float | None = None  # multiplier of the current atoms' output, alpha/r (clip 1, llm 2)
    targets: tuple[str, ...] | None = None  # roles or name patterns (clip q,k,v,o,fc1,fc2; llm q,k,v,o)
    bank_scale: Literal["kept", "official"] = "kept"  # official: frozen atoms lose their scale (LLM code)
    increment: Literal["auto", "before_task", "after_task"] = "auto"  # when fresh atoms join (clip/llm code)
    stats_tokens: int = 4096  # tokens per layer counted for the active-atom statistic per evaluation
    head_loss: Literal["auto", "task", "model"] = "auto"  # classifier heads: CE over the current task's classes (auto)


@dataclass(frozen=True)
class Resolved:
    """The config with every family default filled in."""

    family: str
    rank: int
    topk: int
    temperature: float
    threshold: float
    scale: float
    targets: tuple[str, ...]
    betas: tuple[float, float]
    increment: str


def resolve_defaults(config: MoRAConfig, setting: str) -> Resolved:
    """Fill the ``None`` fields of ``config`` from its family's defaults; one-line errors for bad values."""
    family = config.family if config.family != "auto" else ("llm" if setting == "instr" else "clip")
    values = dict(FAMILIES[family])
    for f in fields(MoRAConfig):
        value = getattr(config, f.name)
        if f.name in values and value is not None and value != "auto":
            values[f.name] = tuple(value) if f.name == "targets" else value
    hp = Resolved(family=family, **values)
    if hp.rank < 1 or hp.topk < 1:
        raise ValueError(f"strategy.rank and strategy.topk must be >= 1, got {hp.rank} and {hp.topk}")
    if hp.temperature <= 0:
        raise ValueError(f"strategy.temperature must be > 0, got {hp.temperature}")
    if not 0 <= hp.threshold <= 1:
        raise ValueError(f"strategy.threshold must be in [0, 1] (s is a unit vector's entry), got {hp.threshold}")
    return hp


def layer_kwargs(hp: Resolved) -> dict:
    """AdapterLinear arguments of a MoRA layer."""
    return {"gate": "topk", "topk": hp.topk, "temperature": hp.temperature, "threshold": hp.threshold}


class MoRA(AdapterBankStrategy):
    """A growing bank of rank-1 atoms per linear, self-activated per token by top-k of normalised projections."""

    supports = frozenset({"cil", "til", "dil", "fscil", "seg", "instr"})
    requires = frozenset({"linear_targets"})
    train_defaults = {"optimizer": "adamw", "lr": 5e-4, "weight_decay": 0.0, "scheduler": "cosine"}
    # MoRAM's runner adapts both CLIP towers (target_encoder=all), so its train_model adds the text->image term, weight 1.
    scenario_defaults = {"text_loss": 1.0, "text_loss_form": "official"}
    Config = MoRAConfig

    def __init__(self, config=None) -> None:
        super().__init__(config)
        self.hp: Resolved | None = None
        self.layers: dict[str, AdapterLinear] = {}
        self._counts: dict[str, list[int]] = {}  # layer name -> [tokens counted, active atoms summed]
        self._hooks: list = []

    def training_step(self, batch, task: Task) -> torch.Tensor:
        """With a classifier head, CE over the current task's classes (``head_loss``; the official code has a frozen
        CLIP text classifier or an LM head instead, which a new task cannot bias); else the scenario's loss."""
        return head_loss(self.model, batch, task, self.config.head_loss)

    def setup(self, model: TaskModel, ctx: Context) -> None:
        super().setup(model, ctx)
        self.hp = resolve_defaults(self.config, ctx.setting)
        if self.config.stats_tokens < 0:
            raise ValueError(f"strategy.stats_tokens must be >= 0, got {self.config.stats_tokens}")
        model.requires_grad_(False)
        self.layers = inject(model, self.hp.targets, backend=ctx.kernel_backend, **layer_kwargs(self.hp))
        self._grow()  # the first task's atoms exist before it starts, so checkpoints always match the structure
        self._hooks = [layer.register_forward_hook(self._count_hook(name)) for name, layer in self.layers.items()]

    # -- the bank --------------------------------------------------------------------------------------------
    def _grow(self) -> None:
        """Append r fresh trainable atoms (A kaiming-uniform, B zero) to every layer."""
        for layer in self.layers.values():
            layer.add_group(self.hp.rank, alpha=self.hp.scale * self.hp.rank)

    def _freeze(self) -> None:
        for layer in self.layers.values():
            for i, group in enumerate(layer.groups):
                if group.frozen:
                    continue
                layer.freeze_group(i)
                if self.config.bank_scale == "official":
                    group.scale.fill_(1.0)  # the LLM code stores B unscaled in the frozen bank

    def before_task(self, task: Task) -> None:
        layer = next(iter(self.layers.values()))
        if layer.groups[-1].frozen:  # increment=before_task: this task's atoms join now
            self._grow()
        for p in self.model.head_parameters():
            p.requires_grad_(True)

    def after_task(self, task: Task) -> None:
        self._freeze()
        if self.hp.increment == "after_task":
            self._grow()
        self._counts = {}  # the evaluation that follows is what strategy_stats reports

    def configure_optimizer(self, params) -> torch.optim.Optimizer:
        train = self.ctx.train
        if train.optimizer == "adamw":
            return torch.optim.AdamW(params, lr=train.lr, weight_decay=train.weight_decay, betas=self.hp.betas)
        if train.optimizer == "adam":
            return torch.optim.Adam(params, lr=train.lr, weight_decay=train.weight_decay, betas=self.hp.betas)
        return super().configure_optimizer(params)

    # -- statistics ------------------------------------------------------------------------------------------
    def _count_hook(self, name: str):
        """Forward hook: in eval mode, count the atoms with a non-zero gate per token (up to stats_tokens)."""

        def hook(layer: AdapterLinear, inputs, output) -> None:
            counts = self._counts.setdefault(name, [0, 0])
            if layer.training or counts[0] >= self.config.stats_tokens or not layer.groups:
                return
            x = inputs[0].reshape(-1, layer.in_features)[: self.config.stats_tokens - counts[0]]
            with torch.no_grad():
                gate = layer.gate_weights(x)
            counts[0] += x.shape[0]
            counts[1] += int((gate != 0).sum())

        return hook

    def strategy_stats(self) -> dict:
        layer = next(iter(self.layers.values()), None)
        counted = [c for c in self._counts.values() if c[0] > 0]
        active = sum(c[1] / c[0] for c in counted) / len(counted) if counted else None
        return {
            "family": self.hp.family if self.hp else None,
            "adapted_layers": len(self.layers),
            "atoms_per_layer": layer.rank if layer else 0,
            "frozen_atoms_per_layer": sum(g.rank for g in layer.groups if g.frozen) if layer else 0,
            "active_atoms_per_token": None if active is None else round(active, 3),
            "topk": max(self.hp.topk, 2) if self.hp else None,
            "added_inference_params": self.added_inference_parameters(),
        }

    # -- resume: rebuild the bank's structure before the tensors load -----------------------------------------
    def get_extra_state(self) -> dict:
        layer = next(iter(self.layers.values()), None)
        return {"frozen": [g.frozen for g in layer.groups] if layer else []}

    def set_extra_state(self, state: dict) -> None:
        for layer in self.layers.values():
            layer.groups = nn.ModuleList()
            for frozen in state["frozen"]:
                i = layer.add_group(self.hp.rank, alpha=self.hp.scale * self.hp.rank)
                if frozen:
                    layer.freeze_group(i)  # the scale buffer (official bank_scale) loads with the tensors
