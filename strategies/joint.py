"""Joint training: at each task, train on the union of the training sets of every task seen so far.

An upper bound for sequential methods (it stores and replays all past data). It continues from the current
weights rather than re-initialising, as incremental joint baselines do; set ``train.epochs`` per task.
"""

from __future__ import annotations

from torch.utils.data import ConcatDataset, Dataset

from cl_suite.api import Strategy, Task


class Joint(Strategy):
    """Upper bound: trains on the union of all tasks seen so far."""

    supports = frozenset({"cil", "til", "dil", "fscil", "seg", "instr"})
    tunes_whole_model = True

    def train_data(self, task: Task) -> Dataset:
        seen = self.ctx.tasks_seen()
        return ConcatDataset([t.train for t in seen]) if len(seen) > 1 else task.train
