"""SEMA: self-expanding mixture of adapters (strategies/sema/strategy.py)."""
