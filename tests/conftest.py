"""Shared fixtures: a temporary results root and a helper that runs the CLI in-process or as a subprocess."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import cl_suite  # noqa: F401  (installs the torchvision fix before any test imports torchvision)

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


def resume_from_first_checkpoint(run_dir: Path) -> Path:
    """Copy a finished 2-task run (kept with train.keep_checkpoints=all), drop the copy's last checkpoint, resume it
    from the first one and return the copy: its results must equal the original's."""
    from cl_suite import results, runner

    copy = run_dir.parent / "resumed"
    shutil.copytree(run_dir, copy)
    (copy / "checkpoints" / "task-001.pt").unlink()
    results.RunStore(copy).update(status="running", run_id="resumed")
    runner.resume(copy, out=io.StringIO(), progress=False)
    return copy


def eval_rows(run_dir: Path) -> list[tuple]:
    """Every evaluation of a run as sorted (after_task, eval_task, metric, value) tuples."""
    from cl_suite import results

    return sorted((e["after_task"], e["eval_task"], e["metric"], e["value"]) for e in results.load_run(run_dir)[1])
