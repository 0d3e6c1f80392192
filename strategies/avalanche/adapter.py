"""Run an Avalanche (0.6) strategy's plugins inside cl-suite's runner.

Design. The runner owns the loop, so Avalanche's ``train()`` never runs. Instead we build Avalanche's own
strategy object (``EWC``, ``Replay``, ``GEM``... from ``avalanche.training.supervised``; that is how its
hyperparameters reach its plugins exactly as Avalanche wires them) around a view of our TaskModel, and fire its
plugins' callbacks from our hooks, in the order Avalanche's ``SupervisedTemplate`` fires them. The template
object itself is the ``strategy`` argument the plugins receive; we keep its state fields (``experience``,
``mbatch``, ``mb_output``, ``loss``, ``optimizer``, ``adapted_dataset``) up to date as its loop would::

    before_task     -> before_training, before_train_dataset_adaptation, after_train_dataset_adaptation,
                       before_training_exp
    training_step   -> before_training_iteration, before_forward, [loss], after_forward, before_backward
    after_backward  -> after_backward, before_update
    after_step      -> after_update, after_training_iteration
    after_task      -> after_training_exp, after_training

Differences from running Avalanche's loop, on purpose:
- Epoch callbacks are not fired (the runner may stop mid-epoch at ``train.max_steps``); none of the wrapped
  plugins uses them except Avalanche's Clock for its epoch counters.
- Replay: Avalanche's ``ReplayDataLoader`` draws a fixed number of memory examples into every minibatch; here
  ``train_data`` returns the current task plus the buffer, shuffled together (the runner owns data loading).
- The evaluation plugin and periodic evaluation are not fired: cl-suite evaluates and records every run.
- Plugin state (buffers, importances, LwF's teacher, counters) goes into our checkpoints through state.py,
  so ``--resume`` continues as Avalanche would.
Task labels are always 0: the wrapped plugins "do not use task identities" and our model has one head.
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any, ClassVar

import torch
from torch import nn
from torch.utils.data import ConcatDataset, Dataset

from cl_suite.api import Batch, Context, Strategy, Task, TaskModel
from cl_suite.avalanche_bridge import TuplesAsItems, require_avalanche, to_avalanche_dataset
from strategies.avalanche import state


class LogitsView(nn.Module):
    """Our TaskModel as the ``model(x) -> logits`` Avalanche's plugins call (memory passes, Fisher, LwF's
    teacher). It returns ``predict(batch, None)``: the class-incremental logits (classes no task has introduced
    are masked), so Avalanche's cross-entropy on them equals our classifier's ``loss``. With ``masked=False``
    it returns the raw ``logits`` (MAS takes the norm of the outputs, which a mask would blow up)."""

    def __init__(self, model: TaskModel, masked: bool = True) -> None:
        super().__init__()
        self.model = model
        self.masked = masked

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch = {"x": x}
        return self.model.predict(batch, None) if self.masked else self.model.logits(batch)


class AvalancheStrategy(Strategy):
    """Base of the ``avalanche-*`` baselines: an Avalanche strategy's plugins driven by our runner."""

    supports = frozenset({"cil", "til", "dil", "fscil"})
    tunes_whole_model = True  # every Avalanche baseline here trains the whole model
    requires = frozenset({"logits"})
    template: ClassVar[str] = "Naive"  # class name in avalanche.training.supervised
    needs_outputs: ClassVar[bool] = False  # plugins read strategy.mb_output (LwF): one extra forward pass
    masked_view: ClassVar[bool] = True  # see LogitsView

    def setup(self, model: TaskModel, ctx: Context) -> None:
        super().setup(model, ctx)
        supervised = require_avalanche("avalanche.training.supervised")
        view = LogitsView(model, masked=self.masked_view)
        placeholder = torch.optim.SGD(view.parameters(), lr=0.0)  # replaced in configure_optimizer, per task
        with warnings.catch_warnings():  # "no loggers specified": cl-suite records the metrics itself
            warnings.simplefilter("ignore", UserWarning)
            template = getattr(supervised, self.template)(
                model=view, optimizer=placeholder, criterion=nn.CrossEntropyLoss(),
                train_mb_size=ctx.train.batch_size, train_epochs=ctx.train.epochs,
                eval_mb_size=ctx.train.eval_batch_size, device=ctx.device, evaluator=None,
                **self.template_kwargs(),
            )  # fmt: skip
        skipped = {id(template.evaluator)}
        skipped |= {id(p) for p in template.plugins if type(p).__name__ == "PeriodicEval"}
        # Not attributes of this nn.Module: the TaskModel is already registered once, as self.model.
        self.__dict__["_view"] = view
        self.__dict__["_template"] = template
        self.__dict__["_plugins"] = [p for p in template.plugins if id(p) not in skipped]
        self._tasks_done = 0

    def template_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of the Avalanche strategy class: by default, our Config's fields."""
        return dataclasses.asdict(self.config)

    # -- plugin plumbing -----------------------------------------------------------------------------------
    def _fire(self, *events: str) -> None:
        for event in events:
            for plugin in self._plugins:
                callback = getattr(plugin, event, None)
                if callback is not None:
                    callback(self._template)
            self._adopt_model()

    def _adopt_model(self) -> None:
        """A plugin that swaps ``strategy.model`` (GDumb re-initialises it) has its weights copied into ours:
        the runner, optimizer and checkpoints keep using our TaskModel. Buffers (the seen-class mask) stay ours."""
        new = self._template.model
        if new is self._view:
            return
        with torch.no_grad():
            for (name, ours), (_, theirs) in zip(self._view.named_parameters(), new.named_parameters()):
                if ours.shape != theirs.shape:
                    raise RuntimeError(f"Avalanche plugin replaced the model with a different shape at {name}")
                ours.copy_(theirs)
        self._template.model = self._view

    # -- our hooks -----------------------------------------------------------------------------------------
    def before_task(self, task: Task) -> None:
        experiences = require_avalanche("avalanche.benchmarks.scenarios.dataset_scenario")
        dataset = to_avalanche_dataset(task.train)
        t = self._template
        t.experience = experiences.DatasetExperience(dataset=dataset, current_experience=task.index)
        t.is_training = True
        self.__dict__["_experience_data"] = dataset
        self._fire("before_training", "before_train_dataset_adaptation")
        t.adapted_dataset = dataset  # Avalanche's train_dataset_adaptation; our tasks carry no transform groups
        self._fire("after_train_dataset_adaptation", "before_training_exp")

    def train_data(self, task: Task) -> Dataset:
        adapted = self._template.adapted_dataset
        data = task.train if adapted is self._experience_data else TuplesAsItems(adapted)  # GDumb: its buffer
        buffers = [p.storage_policy.buffer for p in self._plugins if type(p).__name__ == "ReplayPlugin"]
        buffers = [TuplesAsItems(b) for b in buffers if len(b)]
        return ConcatDataset([data, *buffers]) if buffers else data

    def configure_optimizer(self, params) -> torch.optim.Optimizer:
        optimizer = super().configure_optimizer(params)
        self._template.optimizer = optimizer
        return optimizer

    def training_step(self, batch: Batch, task: Task) -> torch.Tensor:
        t = self._template
        t.mbatch = [batch["x"], batch["y"], torch.zeros_like(batch["y"])]
        self._fire("before_training_iteration", "before_forward")
        loss = self.model.loss(batch, task)
        t.mb_output = self._view(batch["x"]) if self.needs_outputs else None
        self._fire("after_forward")
        t.loss = torch.zeros((), device=loss.device) + loss  # Avalanche starts from an empty loss; plugins add
        self._fire("before_backward")
        return t.loss

    def after_backward(self) -> None:
        self._fire("after_backward", "before_update")

    def after_step(self) -> None:
        self._fire("after_update", "after_training_iteration")

    def after_task(self, task: Task) -> None:
        self._fire("after_training_exp", "after_training")
        self._template.is_training = False
        self._tasks_done = task.index + 1

    # -- resume --------------------------------------------------------------------------------------------
    def get_extra_state(self) -> dict[str, Any]:
        """Every plugin's state (buffers, importances, teacher, counters) as a weights_only-safe tree."""
        return {"tasks_done": self._tasks_done, "plugins": [state.encode_attrs(p) for p in self._plugins]}

    def set_extra_state(self, saved: dict[str, Any]) -> None:
        for plugin, encoded in zip(self._plugins, saved["plugins"]):
            state.restore_attrs(plugin, encoded, self._view)
            if type(plugin).__name__ == "AGEMPlugin" and plugin.buffers:
                loaders = require_avalanche("avalanche.benchmarks.utils.data_loader")
                plugin.buffer_dataloader = loaders.GroupBalancedInfiniteDataLoader(  # as AGEMPlugin.update_memory
                    plugin.buffers, batch_size=plugin.sample_size // len(plugin.buffers), num_workers=0,
                    pin_memory=False, persistent_workers=False,
                )  # fmt: skip
                plugin.buffer_dliter = iter(plugin.buffer_dataloader)
        self._tasks_done = saved["tasks_done"]

    def strategy_stats(self) -> dict[str, Any]:
        sizes = {type(p).__name__: len(p.storage_policy.buffer) for p in self._plugins
                 if hasattr(p, "storage_policy")}  # fmt: skip
        return {"buffer_size": sum(sizes.values())} if sizes else {}
