"""Fused adapter ops and the backend dispatch (DESIGN.md §6).

``adapter_linear`` computes ``y = x·Wᵀ (+ bias) + (act(x·A + b_down) ⊙ gate)·B (+ b_up)`` (spec:
:mod:`cl_suite.kernels.reference`). Backend: Triton on CUDA, PyTorch elsewhere; the environment variable
``CL_SUITE_KERNELS=torch|triton`` (or the ``backend`` argument) forces one. Triton is imported only when chosen.
The PyTorch backend folds the adapter into the weight when that is cheaper (:mod:`cl_suite.kernels.folded`: many
tokens, identity activation, a shared gate, fp32) and otherwise runs the reference.
"""

from __future__ import annotations

import os
from functools import cache

import torch

from cl_suite.kernels.folded import adapter_linear_folded, fold_pays
from cl_suite.kernels.reference import ACTS, adapter_linear_reference, check_args, gate_layout

BACKENDS = ("auto", "torch", "triton")
ENV_VAR = "CL_SUITE_KERNELS"

__all__ = ["ACTS", "BACKENDS", "adapter_linear", "resolve_backend", "triton_available"]


@cache
def triton_available() -> bool:
    """Whether the Triton op can run here: triton importable and a GPU, or the interpreter (TRITON_INTERPRET=1)."""
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return torch.cuda.is_available() or os.environ.get("TRITON_INTERPRET") == "1"


def resolve_backend(backend: str | None, device: torch.device) -> str:
    """The concrete backend ("torch" or "triton") for a tensor on ``device``; explicit choices win over the env."""
    choice = backend if backend not in (None, "auto") else os.environ.get(ENV_VAR, "auto") or "auto"
    if choice not in BACKENDS:
        raise ValueError(f"unknown kernel backend {choice!r}; accepted: {', '.join(BACKENDS)} (from {ENV_VAR} or config)")
    if choice == "auto":
        return "triton" if device.type == "cuda" and triton_available() else "torch"
    if choice == "triton" and not (triton_available() and (device.type == "cuda" or _interpreting())):
        raise RuntimeError("kernel backend 'triton' needs the triton package and a CUDA tensor (or TRITON_INTERPRET=1 "
                           "for the CPU interpreter); use CL_SUITE_KERNELS=torch")  # fmt: skip
    return choice


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


def adapter_linear(
    x: torch.Tensor, A: torch.Tensor, B: torch.Tensor, gate: torch.Tensor | None = None, *,
    weight: torch.Tensor | None = None, bias: torch.Tensor | None = None, act: str = "identity",
    down_bias: torch.Tensor | None = None, up_bias: torch.Tensor | None = None, frozen_ranks: int = 0,
    backend: str | None = None,
) -> torch.Tensor:  # fmt: skip
    """One call of the adapter op, on the chosen backend. Arguments as :func:`adapter_linear_reference`;
    ``frozen_ranks`` leading ranks (frozen groups of a static gate) cost no gradient work."""
    kwargs = {"weight": weight, "bias": bias, "act": act, "down_bias": down_bias, "up_bias": up_bias,
              "frozen_ranks": frozen_ranks}
    if resolve_backend(backend, x.device) == "triton":
        from cl_suite.kernels.triton_adapter import adapter_linear_triton

        return adapter_linear_triton(x, A, B, gate, **kwargs)
    check_args(x, A, B, weight, act)
    g, _ = gate_layout(x.shape, gate, A.shape[1])
    if fold_pays(x, A, B, g, weight, act, down_bias):
        return adapter_linear_folded(x, A, B, None if g is None else g.reshape(-1), weight, bias, up_bias, frozen_ranks)
    return adapter_linear_reference(x, A, B, gate, **kwargs)
