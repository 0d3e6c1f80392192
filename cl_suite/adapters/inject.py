"""Put :class:`AdapterLinear` layers into a TaskModel through its ``linear_targets()`` view, by role or name pattern."""

from __future__ import annotations

from collections.abc import Iterable
from fnmatch import fnmatchcase

from torch import nn

from cl_suite.adapters.linear import AdapterLinear
from cl_suite.api import ROLES, TaskModel


def select_targets(model: TaskModel, targets: Iterable[str]) -> list[tuple[str, nn.Module]]:
    """(name, module) of the linear targets whose role is in ``targets`` or whose name matches one of its patterns.

    A target is a role (``q``, ``v``, ``fc1``...), ``all``, or a glob over dotted names (``*.attn.q``, ``*layers.0.*``).
    """
    targets = list(targets)
    if not targets:
        raise ValueError(f"no adapter targets given; accepted: roles {', '.join(ROLES)}, 'all', or name patterns")
    available = model.linear_targets()
    chosen = [(t.name, t.module) for t in available
              if any(p == "all" or p == t.role or fnmatchcase(t.name, p) for p in targets)]  # fmt: skip
    if not chosen:
        roles = sorted({t.role for t in available})
        raise ValueError(f"adapter targets {targets} match no linear layer; this model has roles "
                         f"{', '.join(roles) or 'none'} (names like {available[0].name if available else '-'})")  # fmt: skip
    return chosen


def inject(model: TaskModel, targets: Iterable[str], **adapter_kwargs) -> dict[str, AdapterLinear]:
    """Replace each selected ``nn.Linear`` in place by an AdapterLinear wrapping it; returns them by name.

    A target that already is an AdapterLinear is returned as it is (injecting twice is harmless).
    """
    layers: dict[str, AdapterLinear] = {}
    for name, module in select_targets(model, targets):
        if isinstance(module, AdapterLinear):
            layers[name] = module
            continue
        parent_name, _, attr = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        if getattr(parent, attr) is not module:
            raise ValueError(f"linear target {name!r} is not the attribute {attr!r} of {parent_name or 'the model'}")
        layer = AdapterLinear(module, **adapter_kwargs)
        setattr(parent, attr, layer)
        layers[name] = layer
    return layers
