"""ALoRA: allocating low-rank adaptation (Liu, Lyn, Zhu, Tian, Graham; NAACL 2024; arXiv 2403.16187), framed for
continual learning.

No official code was found (the paper promises a release; none is in the public code index), so this follows the
paper's description, simplified where the description leaves choices open; every such choice is a knob below and a
line in the README.

Mechanism. Every target linear gets a LoRA of rank ``rank`` (r0); the total rank budget is ``R = r0 × modules``.
Each rank has a gate that is 1 or 0 (here a pruned rank is removed from the layer, which is the same function):

* **AB-LoRA importance** of a rank: the score drop when that rank alone is ablated from the trained super-network,
  ``IS(i) = S(M) − S(M \\ i)`` with ``S = −loss`` on ``score_batches`` batches held for scoring (the paper scores on a
  validation batch; the CL scenarios have no dev split, so the batches come from the task's training data). A
  negative score marks a rank that hurts.
* **Gradual pruning and reallocation**: after the first training pass (the warm-up, ``train.epochs``) come
  ``rounds`` rounds; each prunes the ``prune_per_round`` ranks with the lowest importance over all modules, then
  gives the same number of fresh ranks (``A`` kaiming, ``B`` zero, same scale ``α / r0``) to the modules that lost no
  rank in that round, one at a time in order of their summed importance, and trains ``round_epochs`` more epochs
  (each round is a runner pass with a fresh optimizer, :meth:`next_round`). When every module lost a rank in the
  round (small models; the paper's description does not cover it), the fresh ranks go to all modules in order of
  the summed importance of their surviving ranks. The total rank therefore stays at ``R`` through every round.

Continual-learning framing (ours; the paper fine-tunes one task): every task starts a fresh ALoRA at ``r0`` per
module (``carry_allocation=true``: at the previous task's final allocation, same budget), runs the rounds within the
task, and merges the surviving ranks into the frozen weights at the end, so inference costs nothing extra.

Simplifications (README): the importance is the ablation term only (the paper's full estimator could not be checked
against code); the reallocation order, its fallback when every module lost a rank, and the rounds' spacing by epochs are our
choices; no LoRA dropout; the
classifier head of models that have one trains alongside, as in every adapter strategy here.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from cl_suite.adapters import AdapterBankStrategy, AdapterLinear, inject
from cl_suite.api import Context, Task, TaskModel, to_device


@dataclass
class ALoRAConfig:
    rank: int = 8  # r0: initial rank per module; budget R = r0 × modules
    alpha: float = 16.0  # every rank is weighted α / r0
    rounds: int = 3  # pruning/reallocation rounds per task (after the warm-up pass)
    prune_per_round: int = 0  # ranks pruned (and reallocated) per round; 0: r0
    round_epochs: int = 1  # epochs trained after each round
    score_batches: int = 2  # batches the AB-LoRA scores are computed on
    carry_allocation: bool = False  # start each task at the previous task's allocation (same budget)
    targets: tuple[str, ...] = ("q", "k", "v", "o", "fc1", "fc2")  # roles, "all" or name patterns


class ALoRA(AdapterBankStrategy):
    """LoRA whose ranks are pruned by ablation importance and reallocated across modules under a fixed budget."""

    supports = frozenset({"cil", "til", "dil", "fscil", "seg", "instr"})
    requires = frozenset({"linear_targets"})
    Config = ALoRAConfig

    def __init__(self, config=None) -> None:
        super().__init__(config)
        self.layers: dict[str, AdapterLinear] = {}
        self.allocation: dict[str, int] = {}
        self._round = 0
        self._rounds_log: list[dict] = []
        self._history: list[dict] = []  # per finished task: final allocation, pruned and added per round

    def setup(self, model: TaskModel, ctx: Context) -> None:
        super().setup(model, ctx)
        c = self.config
        if c.rank < 1 or c.rounds < 0 or c.prune_per_round < 0 or c.round_epochs < 1 or c.score_batches < 1:
            raise ValueError(f"strategy.rank, round_epochs and score_batches must be >= 1 and rounds, "
                             f"prune_per_round >= 0; got {c.rank}, {c.round_epochs}, {c.score_batches}, {c.rounds}, "
                             f"{c.prune_per_round}")  # fmt: skip
        model.requires_grad_(False)
        self.layers = inject(model, c.targets, backend=ctx.kernel_backend)
        self.allocation = dict.fromkeys(self.layers, c.rank)

    @property
    def budget(self) -> int:
        return self.config.rank * len(self.layers)

    def total_rank(self) -> int:
        return sum(layer.rank for layer in self.layers.values())

    def _add_ranks(self, layer: AdapterLinear, n: int) -> None:
        """Append ``n`` fresh ranks weighted ``α / r0`` (the scale every rank of this strategy has)."""
        layer.add_group(n, self.config.alpha * n / self.config.rank)

    # -- per task --------------------------------------------------------------------------------------------
    def before_task(self, task: Task) -> None:
        if not self.config.carry_allocation:
            self.allocation = dict.fromkeys(self.layers, self.config.rank)
        for name, layer in self.layers.items():
            if layer.groups:  # a task that ended without after_task (never in the runner): start clean
                layer.prune_groups(list(range(len(layer.groups))))
            if self.allocation[name]:
                self._add_ranks(layer, self.allocation[name])
        self._round = 0
        self._rounds_log = []
        for p in self.model.head_parameters():
            p.requires_grad_(True)

    def _score_batches(self, task: Task) -> list:
        out = []
        for i, batch in enumerate(self.ctx.loader(task.train, shuffle=True)):
            if i >= self.config.score_batches:
                break
            out.append(to_device(batch, self.ctx.device))
        return out

    @torch.no_grad()
    def importance(self, task: Task) -> dict[tuple[str, int, int], float]:
        """AB-LoRA: ``S(M) − S(M \\ i)`` for every live rank, keyed (layer, group, column); ``S = −mean loss``."""
        batches = self._score_batches(task)
        was_training = self.model.training
        self.model.eval()

        def score() -> float:
            return -sum(float(self.model.loss(b, task)) for b in batches) / max(1, len(batches))

        full = score()
        scores = {}
        for name, layer in self.layers.items():
            for gi, group in enumerate(layer.groups):
                for i in range(group.rank):
                    saved = group.B[i].clone()
                    group.B[i] = 0  # ablate rank i: its contribution (x·A_i)·B_i vanishes
                    scores[(name, gi, i)] = full - score()
                    group.B[i] = saved
        self.model.train(was_training)
        return scores

    @torch.no_grad()
    def prune_and_reallocate(self, scores: dict[tuple[str, int, int], float]) -> dict:
        """Prune the lowest-importance ranks over all modules, give as many fresh ranks to modules that lost none
        (ordered by summed importance of their surviving ranks; every module when none is left)."""
        n = min(self.config.prune_per_round or self.config.rank, len(scores))
        pruned = sorted(scores, key=lambda k: (scores[k], k))[:n]
        lost: dict[str, int] = {}
        for name, layer in self.layers.items():
            drop = [(gi, i) for (ln, gi, i) in pruned if ln == name]
            if not drop:
                continue
            lost[name] = len(drop)
            for gi in sorted({gi for gi, _ in drop}, reverse=True):  # from the last group, so indices stay valid
                keep = torch.ones(layer.groups[gi].rank, dtype=torch.bool)
                keep[[i for g, i in drop if g == gi]] = False
                layer.prune_ranks(gi, keep)
        gone = set(pruned)
        summed = {name: sum(v for k, v in scores.items() if k[0] == name and k not in gone) for name in self.layers}
        recipients = [name for name in self.layers if name not in lost] or list(self.layers)  # fallback: see above
        recipients.sort(key=lambda m: (-summed[m], m))
        added: dict[str, int] = {}
        for j in range(n):
            name = recipients[j % len(recipients)]
            added[name] = added.get(name, 0) + 1
        for name, k in added.items():
            self._add_ranks(self.layers[name], k)
        self.allocation = {name: layer.rank for name, layer in self.layers.items()}
        return {"pruned": sum(lost.values()), "added": sum(added.values()), "total_rank": self.total_rank()}

    def next_round(self, task: Task) -> int | None:
        if self._round >= self.config.rounds:
            return None
        self._round += 1
        log = self.prune_and_reallocate(self.importance(task))
        self._rounds_log.append(log)
        self.ctx.log(event="alora_round", task=task.index, round=self._round, **log)
        return self.config.round_epochs

    @torch.no_grad()
    def after_task(self, task: Task) -> None:
        self.allocation = {name: layer.rank for name, layer in self.layers.items()}
        for layer in self.layers.values():
            layer.freeze()
            layer.merge_groups()
        self._history.append({"allocation": dict(self.allocation), "rounds": list(self._rounds_log)})

    # -- reporting -------------------------------------------------------------------------------------------
    def strategy_stats(self) -> dict:
        last = self._history[-1] if self._history else {}
        alloc = last.get("allocation", {})
        return {"rank": self.config.rank, "adapted_layers": len(self.layers), "budget": self.budget,
                "final_total_rank": sum(alloc.values()), "allocation": alloc, "rounds": last.get("rounds", []),
                "max_module_rank": max(alloc.values(), default=0), "pruned_modules": sum(v == 0 for v in alloc.values()),
                "added_inference_params": self.added_inference_parameters()}  # fmt: skip

    # -- resume: the checkpoint holds the merged weights and no groups; keep the allocation and history ----------
    def get_extra_state(self) -> dict:
        return {"history": self._history, "allocation": self.allocation}

    def set_extra_state(self, state: dict) -> None:
        self._history = [dict(h) for h in state["history"]]
        self.allocation = dict(state["allocation"])
        for layer in self.layers.values():
            layer.prune_groups(list(range(len(layer.groups))))
            layer.merged_groups = len(self._history)
