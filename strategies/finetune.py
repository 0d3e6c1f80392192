"""Sequential fine-tuning: train every parameter on each task in turn. The lower bound of most benchmarks,
and the smallest complete strategy plugin (copy this file to start a new one)."""

from __future__ import annotations

from dataclasses import dataclass

from cl_suite.api import Strategy


@dataclass
class FinetuneConfig:
    """Fine-tuning has no knobs of its own; the run's train.* block sets optimizer, lr and epochs."""


class Finetune(Strategy):
    """Sequential fine-tuning of all parameters (lower bound)."""

    supports = frozenset({"cil", "til", "dil", "fscil", "seg", "instr"})
    tunes_whole_model = True
    Config = FinetuneConfig
