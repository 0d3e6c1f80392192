"""OSFT / orthogonal SVD fine-tuning ("Sculpting Subspaces"): the strategy (strategy.py), the re-parameterised
linear layer (svd_linear.py) and the per-matrix rank rules (ranks.py)."""
