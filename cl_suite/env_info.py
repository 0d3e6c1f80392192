"""What a run records about where it ran: versions, git state, device, memory. Never raises."""

from __future__ import annotations

import importlib.metadata
import platform
import resource
import subprocess
import sys
from pathlib import Path

import torch

PACKAGES = ("torch", "numpy", "pandas", "open_clip_torch", "transformers", "avalanche-lib", "triton", "streamlit")


def _version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _git(*args: str) -> str | None:
    source = Path(__file__).resolve().parent.parent
    try:
        out = subprocess.run(["git", *args], cwd=source, capture_output=True, text=True, timeout=5, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def environment(device: torch.device) -> dict:
    from cl_suite import __version__

    status = _git("status", "--porcelain", "--untracked-files=no")
    return {
        "cl_suite": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "git_sha": _git("rev-parse", "HEAD"),
        "git_dirty": None if status is None else bool(status),
        "device": device_name(device),
        "packages": {name: v for name in PACKAGES if (v := _version(name))},
    }


def peak_memory_mb(device: torch.device) -> float:
    """Peak accelerator memory on CUDA; peak resident memory of this process on a CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB
