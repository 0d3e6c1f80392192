"""``AdapterBankStrategy``: the parameter bookkeeping shared by strategies that train AdapterLinear banks."""

from __future__ import annotations

from collections.abc import Iterator

from torch import nn

from cl_suite.adapters.linear import AdapterLinear, bank_parameters
from cl_suite.api import Strategy


class AdapterBankStrategy(Strategy):
    """A strategy whose trainable state is the adapter banks in ``self.layers`` (name -> AdapterLinear, filled in
    ``setup``) plus the model's head: the optimizer sees the bank's trainable groups and the trainable head, and what
    the bank holds (frozen groups too) counts as added inference parameters."""

    layers: dict[str, AdapterLinear]

    def trainable_parameters(self) -> Iterator[nn.Parameter]:
        params = bank_parameters(self.layers.values())
        return iter(params + [p for p in self.model.head_parameters() if p.requires_grad])

    def added_inference_parameters(self) -> int:
        return sum(p.numel() for p in bank_parameters(self.layers.values(), trainable_only=False))
