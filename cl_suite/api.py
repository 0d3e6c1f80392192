"""The contracts between the runner, scenarios and strategies: the only module a plugin needs.

A *scenario* builds an ordered list of :class:`Task` objects and a :class:`TaskModel`, and owns evaluation. A
*strategy* is an ``nn.Module`` plugin that adapts the task model through hooks; the runner (cl_suite.runner) owns
the loop: backward, optimizer step, clipping, evaluation, checkpoints and the run record. See DESIGN.md §3.

Hook order for every task ``t`` (the runner calls them; a strategy never writes its own loop)::

    model.on_task_start(task)          # scenario side: e.g. mark new classes as seen, add class prompts
    strategy.before_task(task)         # expand, freeze, compute bases, scan data with ctx.loader
    opt = strategy.configure_optimizer(trainable params)
    for batch in loader(strategy.train_data(task)):
        loss = strategy.training_step(batch, task)
        loss.backward(); strategy.after_backward()      # gradient projection
        opt.step();      strategy.after_step()          # proximal steps, re-projection
    strategy.after_task(task)          # merge, freeze, update subspaces
    scenario.evaluate(predict, every task)              # predict gets task_id only in the 'til' setting
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

SETTINGS = ("cil", "til", "dil", "fscil", "seg", "instr")
"""Evaluation settings: class-, task-, domain-incremental, few-shot class-incremental, segmentation, instruction."""

ROLES = ("q", "k", "v", "o", "fc1", "fc2", "patch")
"""Roles of the linear layers a TaskModel exposes to adapters (gate/up/down of LLMs map to fc1/fc1/fc2 + a name)."""

CAPABILITIES = {
    "features": "model.features(batch) -> (B, D) pooled representation",
    "logits": "model.logits(batch) -> (B, C) scores over a global label space; batch['y'] holds labels",
    "linear_targets": "model.linear_targets() is non-empty (adapters, gradient projection)",
    "blocks": "model.blocks() is non-empty (block-level adapters such as SEMA's)",
}
"""What a scenario's model may provide (``Scenario.provides``) and a strategy may need (``Strategy.requires``)."""

Batch = dict[str, Any]


class MissingData(FileNotFoundError):
    """Data a scenario needs is not on disk. The message is one line: the dataset, the missing path, the layout expected."""


@dataclass(frozen=True)
class Task:
    """One step of a continual stream. ``classes`` are the global label ids the task introduces (if any)."""

    index: int
    name: str
    train: Dataset
    test: Dataset
    classes: tuple[int, ...] = ()
    meta: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class LinearTarget:
    """A ``nn.Linear`` inside a TaskModel where an adapter may go. ``name`` is its dotted path in the model."""

    name: str
    role: str
    module: nn.Linear


@dataclass(frozen=True)
class BlockView:
    """One transformer block. ``norm`` is the pre-MLP norm, so its input is the post-attention residual stream
    (where SEMA reads), and a forward hook on ``mlp`` can add to the MLP's output."""

    index: int
    block: nn.Module
    attn: nn.Module
    norm: nn.Module
    mlp: nn.Module


@dataclass
class Context:
    """What the runner hands to a scenario's model builder and to a strategy. Passed explicitly: no globals."""

    device: torch.device
    dtype: torch.dtype
    seed: int
    num_tasks: int
    setting: str
    train: Any  # cl_suite.config.TrainConfig: optimizer, lr, epochs, batch sizes
    make_loader: Callable[..., DataLoader]
    log: Callable[..., None] = lambda **fields: None
    kernel_backend: str = "auto"
    tasks_seen: Callable[[], Sequence[Task]] = lambda: ()

    def loader(self, dataset: Dataset, *, shuffle: bool = False, batch_size: int | None = None) -> DataLoader:
        """A data loader with the scenario's collate function and a seeded shuffle (e.g. for pre-task scans)."""
        return self.make_loader(dataset, shuffle=shuffle, batch_size=batch_size)


@dataclass
class EmptyConfig:
    """A plugin with no knobs."""


class TaskModel(nn.Module):
    """The model a scenario builds around a backbone. Strategies see only this interface.

    ``on_task_start`` must be cheap and deterministic, and whatever it builds must live in the state dict or be
    rebuilt by calling it again: on ``--resume`` the runner replays it for every finished task before loading the
    checkpoint.
    """

    backbone_name: str = "unknown"

    def loss(self, batch: Batch, task: Task) -> torch.Tensor:
        raise NotImplementedError

    def predict(self, batch: Batch, task_id: int | None) -> torch.Tensor:
        """Scores (logits, token ids, masks...) the scenario's ``evaluate`` understands."""
        raise NotImplementedError

    def on_task_start(self, task: Task) -> None:
        """Called before the strategy's ``before_task``: add a head, class prompts, mark classes as seen."""

    def head_parameters(self) -> list[nn.Parameter]:
        """Parameters every method trains alongside its own (a classifier head); empty for CLIP and LLMs."""
        return []

    def linear_targets(self) -> list[LinearTarget]:
        return []

    def blocks(self) -> list[BlockView]:
        return []


class Strategy(nn.Module):
    """Base class of every strategy plugin. Override only the hooks you need; the defaults are fine-tuning.

    Class attributes:
        Config: a dataclass whose fields are the strategy's knobs (``--set strategy.<field>=...``).
        supports: the settings it can run in; a scenario of another setting is refused before anything loads.
            Declare it as a literal in the class body so ``cl-suite list`` can read it without importing you.
        train_defaults: overrides of the run's ``train.*`` defaults (e.g. ``{"lr": 5e-4}``); the user's win.
        tunes_whole_model: True for strategies that train every weight of the model (finetune, joint, the
            Avalanche baselines): the scenario's ``full_tune_defaults`` then apply to them (a pretrained backbone's
            recipe for full fine-tuning), below the strategy's own ``train_defaults``.
        scenario_defaults: ``scenario.*`` values the method's official code uses (e.g. CoDyRA's CLIP loss
            ``{"text_loss": 1.0}``), applied to scenarios whose Config has the key; the user's win.
        requires: capabilities (CAPABILITIES) the task model must provide, e.g. ``{"linear_targets"}``.
        trains: False for strategies that never update weights (zero-shot); the runner then skips training.
            The runner reads it before every task, so ``before_task`` may set it on the instance (train one task only).

    State that must survive ``--resume`` lives in the module's state dict. A strategy that grows structure per
    task (new adapters, atoms, bases) returns what it needs from ``get_extra_state`` and rebuilds it in
    ``set_extra_state``: torch calls that on the strategy before loading its children's tensors.
    """

    Config: ClassVar[type] = EmptyConfig
    supports: ClassVar[frozenset[str]] = frozenset(SETTINGS)
    requires: ClassVar[frozenset[str]] = frozenset()
    train_defaults: ClassVar[Mapping[str, Any]] = {}
    tunes_whole_model: ClassVar[bool] = False
    scenario_defaults: ClassVar[Mapping[str, Any]] = {}
    trains: ClassVar[bool] = True

    def __init__(self, config: Any = None) -> None:
        super().__init__()
        self.config = config if config is not None else self.Config()
        self.model: TaskModel | None = None
        self.ctx: Context | None = None

    # -- hooks ---------------------------------------------------------------------------------------------
    def setup(self, model: TaskModel, ctx: Context) -> None:
        """Receive the task model (registered as a submodule, so checkpoints hold it) and the context."""
        self.model = model
        self.ctx = ctx

    def before_task(self, task: Task) -> None:
        pass

    def train_data(self, task: Task) -> Dataset:
        """The data trained on for ``task`` (joint training and replay return more than ``task.train``)."""
        return task.train

    def training_step(self, batch: Batch, task: Task) -> torch.Tensor:
        return self.model.loss(batch, task)

    def after_backward(self) -> None:
        """Between backward and the optimizer step: gradient projection."""

    def after_step(self) -> None:
        """After the optimizer step: proximal steps, re-projection."""

    def next_round(self, task: Task) -> int | None:
        """After a training pass on ``task``: the epochs of one more pass, or None (the default) to end the task.

        Each pass gets a fresh optimizer over the re-read ``trainable_parameters`` and a fresh schedule (``max_steps``
        still caps every pass). SEMA uses it for its descriptor phase and for training after a mid-task expansion.
        """
        return None

    def after_task(self, task: Task) -> None:
        """Merge, freeze, expand, update subspaces."""

    def configure_optimizer(self, params: Iterable[nn.Parameter]) -> torch.optim.Optimizer:
        return make_optimizer(params, self.ctx.train)

    def predict(self, batch: Batch, task_id: int | None) -> torch.Tensor:
        return self.model.predict(batch, task_id)

    # -- reporting -----------------------------------------------------------------------------------------
    def trainable_parameters(self) -> Iterator[nn.Parameter]:
        """Parameters the optimizer updates for the current task (re-read every task)."""
        return (p for p in self.parameters() if p.requires_grad)

    def added_inference_parameters(self) -> int:
        """Parameters the strategy adds to the model at inference time (0 for fine-tuning or merged adapters)."""
        return 0

    def strategy_stats(self) -> dict[str, Any]:
        """JSON-serialisable statistics recorded after each task (atoms per layer, effective ranks...)."""
        return {}


class Scenario:
    """Base class of every scenario plugin: a stream of tasks, the model for it, and its evaluation protocol.

    Class attributes:
        setting: one of SETTINGS; decides whether ``predict`` receives the task id (only in ``til``).
        metrics: metric name -> "max" or "min" (which way is better); the first is the primary metric.
        summary: the names (cl_suite.metrics) of the summaries shown for this scenario, the first one ranks.
        Config: a dataclass of the protocol's knobs (``--set scenario.<field>=...``).
        train_defaults: defaults of the run's ``train.*`` block for this scenario.
        provides: capabilities (CAPABILITIES) of the model ``build_model`` returns.
    """

    setting: ClassVar[str] = "cil"
    provides: ClassVar[frozenset[str]] = frozenset()
    metrics: ClassVar[Mapping[str, str]] = {"acc": "max"}
    summary: ClassVar[tuple[str, ...]] = ("last", "avg_inc", "forgetting", "bwt", "fwt")
    Config: ClassVar[type] = EmptyConfig
    train_defaults: ClassVar[Mapping[str, Any]] = {}

    def __init__(self, config: Any = None, *, tiny: bool = False) -> None:
        self.config = config if config is not None else self.Config()
        self.tiny = tiny

    @property
    def backbone(self) -> str:
        """Backbone identifier: the leaderboard never mixes rows of different backbones."""
        return "unknown"

    def tasks(self) -> list[Task]:
        raise NotImplementedError

    def build_model(self, ctx: Context) -> TaskModel:
        raise NotImplementedError

    def collate(self, items: list[Any]) -> Batch:
        return torch.utils.data.default_collate(items)

    @classmethod
    def full_tune_defaults(cls, config: Any) -> Mapping[str, Any]:
        """``train.*`` overrides for strategies that fine-tune the whole model (``Strategy.tunes_whole_model``)
        under ``config``: e.g. a lower lr when the backbone arrives pretrained and ``train_defaults`` were chosen for
        training it from scratch. The user's values and the strategy's own ``train_defaults`` win."""
        return {}

    def check_data(self) -> None:
        """Raise :class:`MissingData` if the data this scenario reads is not on disk.

        The runner calls it before a run folder exists, so missing data is bad input (exit 2), never a failed run.
        Scenarios that generate their data keep the default, which checks nothing.
        """

    def describe(self) -> dict[str, Any]:
        """This scenario's part of its protocol card (``cl-suite describe``; the rest comes from the class and config).

        Returns ``{"tasks": [...]}`` and optionally ``"sources"`` (``{"what", "repo", "path", "commit"}`` each: where
        the protocol's facts were transcribed from) and ``"notes"`` (strings). Each task is a dict with ``name`` and,
        where the protocol has them, ``class_names``, ``templates`` (``{}`` marks the class name), ``split``,
        ``shots``, ``metric``, ``example_input``. The default builds the tasks, which is cheap only for scenarios that
        generate their data: a full-scale protocol overrides it from its shipped protocol data, reading nothing on disk.
        """
        return {"tasks": [task_card(task) for task in self.tasks()]}

    def evaluate(self, predict: Callable[[Batch], torch.Tensor], task: Task, ctx: Context) -> dict[str, float]:
        """Score ``task``'s test set with ``predict`` (which already carries the task id the setting allows)."""
        raise NotImplementedError


CARD_KEYS = ("class_names", "templates", "split", "shots", "metric", "example_input", "organs", "labels")
"""Task meta entries copied into a protocol card by :func:`task_card`."""


def task_card(task: Task) -> dict[str, Any]:
    """A task's entry in the protocol card: its name, the global class ids it adds, and its documented meta."""
    card: dict[str, Any] = {"name": task.name}
    if task.classes:
        card["classes"] = [int(c) for c in task.classes]
    card.update({key: task.meta[key] for key in CARD_KEYS if key in task.meta})
    return card


def to_device(batch: Any, device: torch.device) -> Any:
    """Move every tensor of a (nested) batch to ``device``."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(v, device) for v in batch)
    return batch


def incompatibility(scenario: type[Scenario], strategy: type[Strategy]) -> str | None:
    """Why ``strategy`` cannot run on ``scenario`` (setting or model capabilities), or None if it can."""
    if scenario.setting not in strategy.supports:
        return f"it supports settings {', '.join(sorted(strategy.supports))}, and the scenario is {scenario.setting!r}"
    missing = sorted(set(strategy.requires) - set(scenario.provides))
    if missing:
        return f"it needs a model with {', '.join(missing)}, which the scenario's model does not provide"
    return None


def primary_metric(scenario: type[Scenario] | Scenario) -> str:
    return next(iter(scenario.metrics))


def make_optimizer(params: Iterable[nn.Parameter], train: Any) -> torch.optim.Optimizer:
    """The default optimizer from the run's ``train`` block (adamw, adam or sgd)."""
    params = list(params)
    name = train.optimizer
    if name == "adamw":
        return torch.optim.AdamW(params, lr=train.lr, weight_decay=train.weight_decay)
    if name == "adam":
        return torch.optim.Adam(params, lr=train.lr, weight_decay=train.weight_decay)
    if name == "sgd":
        return torch.optim.SGD(params, lr=train.lr, momentum=train.momentum, weight_decay=train.weight_decay)
    raise ValueError(f"unknown optimizer {name!r}; accepted: adamw, adam, sgd")
