"""Shared fixtures: a temporary results root and a helper that runs the CLI in-process or as a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import cl_suite  # noqa: F401  (installs the torchvision fix before any test imports torchvision)
from cl_suite.testing import eval_rows, resume_from_first_checkpoint  # noqa: F401  (one implementation, shared)

# One torch thread per process (subprocesses inherit it): tiny models run faster so, and far faster on a busy machine.
os.environ.setdefault("OMP_NUM_THREADS", "1")

REPO = Path(__file__).resolve().parent.parent


def pytest_collection_modifyitems(config, items):
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def results_root(tmp_path: Path) -> Path:
    return tmp_path / "results"


def cli(*args: str, cwd: Path | None = None, timeout: int = 300, env: dict | None = None):
    """Run `cl-suite ARGS` in a subprocess (as a user would); returns the CompletedProcess."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "cl_suite.cli", *args], cwd=cwd or REPO, capture_output=True,
                          text=True, timeout=timeout, env=full_env)  # fmt: skip
