"""Zero-shot: never trains. With a pretrained backbone (CLIP, an LLM) it measures what the model knows before
any continual learning; with a randomly initialised one it measures chance."""

from __future__ import annotations

from cl_suite.api import Strategy


class ZeroShot(Strategy):
    """No training: evaluates the pretrained (or initial) model on every task."""

    supports = frozenset({"cil", "til", "dil", "fscil", "seg", "instr"})
    trains = False
