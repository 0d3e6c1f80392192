"""Avalanche plugin state as a tree our checkpoints can hold, so ``--resume`` restores buffers and importances.

The runner loads checkpoints with ``torch.load(weights_only=True)``: only tensors and plain containers. So a
plugin's attributes are encoded into tagged dicts of tensors and primitives, and decoded back onto a freshly
built plugin. Nothing is unpickled: objects are rebuilt only for classes of the ``avalanche`` package (by
``__new__`` and their attribute dict, without running any code of theirs), modules are copies of our model
view, datasets are materialised (plugins keep only bounded buffers). Data loaders and iterators are skipped
and rebuilt by the caller (A-GEM's memory loader).
"""

from __future__ import annotations

import copy
import functools
import importlib
import types
from collections import defaultdict
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from cl_suite.avalanche_bridge import require_avalanche

_FACTORIES: dict[str, Callable[[], Any]] = {"dict": dict, "set": set, "list": list}


def _skip(value: Any) -> bool:
    """Values a checkpoint cannot hold and the plugins rebuild: loaders, iterators, functions."""
    routines = (types.FunctionType, types.MethodType, types.BuiltinFunctionType, functools.partial)
    return isinstance(value, (DataLoader, Iterator, *routines)) or "DataLoader" in type(value).__name__


def encode(value: Any) -> Any:
    """A weights_only-safe tree for ``value`` (see module docstring); raises TypeError for what it cannot hold."""
    utils = require_avalanche("avalanche.training.utils")
    if value is None or isinstance(value, (bool, int, float, str, torch.Tensor)):
        return value
    if isinstance(value, torch.device):
        return {"__t": "device", "v": str(value)}
    if isinstance(value, utils.ParamData):
        return {"__t": "param", "name": value.name, "data": value.data.detach().clone()}
    if isinstance(value, nn.Module):
        return {"__t": "module", "state": {k: v.detach().clone() for k, v in value.state_dict().items()}}
    if isinstance(value, dict):
        factory = value.default_factory.__name__ if isinstance(value, defaultdict) else None
        if factory is not None and factory not in _FACTORIES:
            raise TypeError(f"cannot checkpoint a defaultdict({factory})")
        return {"__t": "dict", "default": factory, "items": [[encode(k), encode(v)] for k, v in value.items()]}
    if isinstance(value, (list, tuple, set, frozenset)):
        kind = "list" if isinstance(value, list) else "tuple" if isinstance(value, tuple) else "set"
        return {"__t": kind, "items": [encode(v) for v in value]}
    if isinstance(value, (Dataset, require_avalanche("avalanche.benchmarks.utils.data").AvalancheDataset)):
        return _encode_dataset(value)
    cls = type(value)
    if cls.__module__.startswith("avalanche.") and hasattr(value, "__dict__"):
        return {"__t": "object", "cls": f"{cls.__module__}:{cls.__qualname__}", "state": encode_attrs(value)}
    raise TypeError(f"cannot checkpoint a {cls.__module__}.{cls.__qualname__}")


def encode_attrs(obj: Any) -> dict[str, Any]:
    return {k: encode(v) for k, v in vars(obj).items() if not _skip(v)}


def _encode_dataset(dataset: Dataset) -> dict[str, Any]:
    items = [dataset[i] for i in range(len(dataset))]
    if not items:
        return {"__t": "dataset", "x": None, "y": None, "t": None}
    x = torch.stack([torch.as_tensor(it[0]) for it in items])
    y = torch.tensor([int(it[1]) for it in items])
    t = torch.tensor([int(it[-1]) if len(it) > 2 else 0 for it in items])
    return {"__t": "dataset", "x": x, "y": y, "t": t}


def decode(node: Any, model: nn.Module) -> Any:
    """Inverse of :func:`encode`; modules are rebuilt as copies of ``model`` with the saved state."""
    if not isinstance(node, dict) or "__t" not in node:
        return node
    kind = node["__t"]
    if kind == "device":
        return torch.device(node["v"])
    if kind == "param":
        utils = require_avalanche("avalanche.training.utils")
        data = node["data"]
        return utils.ParamData(node["name"], init_tensor=data.clone(), device=data.device)
    if kind == "module":
        module = copy.deepcopy(model)
        module.load_state_dict(node["state"])
        return module
    if kind == "dict":
        factory = node["default"]
        out = defaultdict(_FACTORIES[factory]) if factory else {}
        for k, v in node["items"]:
            out[decode(k, model)] = decode(v, model)
        return out
    if kind in ("list", "tuple", "set"):
        items = [decode(v, model) for v in node["items"]]
        return {"list": list, "tuple": tuple, "set": set}[kind](items)
    if kind == "dataset":
        return _decode_dataset(node)
    if kind == "object":
        module_name, _, qualname = node["cls"].partition(":")
        if not module_name.startswith("avalanche."):
            raise ValueError(f"refusing to rebuild {node['cls']} from a checkpoint: not an Avalanche class")
        cls = getattr(importlib.import_module(module_name), qualname)
        obj = cls.__new__(cls)
        obj.__dict__.update({k: decode(v, model) for k, v in node["state"].items()})
        return obj
    raise ValueError(f"unknown node {kind!r} in an Avalanche plugin checkpoint")


def _decode_dataset(node: dict[str, Any]) -> Any:
    utils = require_avalanche("avalanche.benchmarks.utils")
    if node["x"] is None:
        return utils.concat_datasets([])
    pairs = torch.utils.data.TensorDataset(node["x"], node["y"])
    labels = node["t"].tolist()
    # One task label is stored as a constant, as to_avalanche_dataset builds it, so the two concatenate.
    task_labels = labels[0] if len(set(labels)) == 1 else labels
    return utils._make_taskaware_classification_dataset(pairs, task_labels=task_labels, targets=node["y"].tolist())


def restore_attrs(obj: Any, encoded: dict[str, Any], model: nn.Module) -> None:
    """Set the decoded attributes on a freshly built plugin (attributes that were skipped keep their value)."""
    for key, node in encoded.items():
        setattr(obj, key, decode(node, model))
