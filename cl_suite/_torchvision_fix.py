"""Make the registry's torchvision 0.28.0 (a CUDA build) importable on CPU torch 2.13.0.

Why: its compiled ops fail to load on CPU torch, and its Python layer then registers fake kernels for
``torchvision::nms`` / ``qnms`` whose schemas were never defined, so ``import torchvision`` raises
``RuntimeError: operator torchvision::nms does not exist``. That breaks open_clip, avalanche, timm and
transformers' model classes. Defining the two schemas just before torchvision loads lets the import finish;
torchvision's C++ ops (``ops.nms``) still do not work, and nothing here needs them.

The hook is a one-shot ``sys.meta_path`` finder: it stays dormant until the first ``import torchvision``, then
removes itself, and defines the schemas only where torchvision's ops do not already exist (a CUDA install is left
untouched). See ../shared/reference/environment.md §3.
"""

from __future__ import annotations

import importlib.abc
import sys

_SCHEMA = "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor"
_libraries: list = []  # keeps the torch.library.Library objects alive


def define_missing_ops() -> bool:
    """Define ``torchvision::nms``/``qnms`` schemas if absent. Returns True when it defined them."""
    import torch

    try:
        torch.ops.torchvision.nms  # noqa: B018 - attribute access is the existence check
        return False
    except (AttributeError, RuntimeError):
        pass
    lib = torch.library.Library("torchvision", "DEF")
    lib.define("nms" + _SCHEMA)
    lib.define("qnms" + _SCHEMA)
    _libraries.append(lib)
    return True


class _TorchvisionFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        if fullname != "torchvision":
            return None
        uninstall()
        define_missing_ops()
        return None  # let the normal machinery import torchvision


def install() -> None:
    """Install the finder once; a no-op if torchvision is already imported or the finder is in place."""
    if "torchvision" in sys.modules or any(isinstance(f, _TorchvisionFinder) for f in sys.meta_path):
        return
    sys.meta_path.insert(0, _TorchvisionFinder())


def uninstall() -> None:
    sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, _TorchvisionFinder)]
