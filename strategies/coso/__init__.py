"""CoSO (continuous subspace optimization): the strategy (strategy.py), its projected AdamW (optimizer.py) and the
per-layer subspace memory (subspace.py). Nothing is imported here, so `cl-suite list` reads plugins without loading them."""
