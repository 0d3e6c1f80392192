"""Mamba-FSCIL: a dual selective state-space projector for few-shot class-incremental learning (see strategy.py)."""
