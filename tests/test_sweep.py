"""Sweeps (cl_suite.sweep): grid expansion, skip-finished, kill and resume, retries, both result transfers,
the local process pool and Ray started locally. Cells are tiny digits runs with one epoch per task."""

from __future__ import annotations

import io
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO

from cl_suite import config, sweep
from cl_suite.sweep_backends import local_gpu_slots, pack, store_returned

FAST = ["train.epochs=1"]

# A second scenario (digits with the class order reversed) and two misbehaving strategies, loaded by module:Class
# from the test's working folder, in this process and in every worker.
PLUGINS = textwrap.dedent('''
    import os
    from dataclasses import dataclass
    from pathlib import Path

    from scenarios.digits import DigitsConfig, DigitsTiny
    from strategies.finetune import Finetune


    @dataclass
    class ReversedConfig(DigitsConfig):
        class_order: tuple[int, ...] = (9, 8, 7, 6, 5, 4, 3, 2, 1, 0)


    class DigitsReversed(DigitsTiny):
        Config = ReversedConfig


    class Flaky(Finetune):
        """Fails after its first task the first time it runs for a seed, then behaves."""

        def after_task(self, task):
            marker = Path(os.environ["SWEEP_TEST_MARKERS"]) / f"flaky-{self.ctx.seed}"
            if task.index == 1 and not marker.exists():
                marker.touch()
                raise RuntimeError("flaky failure on purpose")


    class Broken(Finetune):
        def training_step(self, batch, task):
            raise RuntimeError("broken on purpose")
''')


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch) -> Path:
    (tmp_path / "sweep_plugins.py").write_text(PLUGINS)
    (tmp_path / "markers").mkdir()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SWEEP_TEST_MARKERS", str(tmp_path / "markers"))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(REPO), str(tmp_path), os.environ.get("PYTHONPATH", "")]))
    return tmp_path


def records(root: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in sorted((root / "runs").glob("*/run.json"))}


def check_board(text: str, root: Path, cells: int, seeds: int) -> None:
    """The printed leaderboard holds one row per scenario × strategy with mean ± std over the seeds, and the
    numbers are those of the run records."""
    runs = records(root).values()
    groups: dict[tuple, list[float]] = {}
    for r in runs:
        groups.setdefault((r["scenario"], r["strategy"]), []).append(r["summary"]["last"])
    assert len(runs) == cells and all(len(v) == seeds for v in groups.values())
    board = text[re.search(r"scenario +strategy", text).start() :].splitlines()
    assert len(board) == 1 + len(groups)
    for (scenario, strategy), values in groups.items():
        row = next(line for line in board if line.split()[:2] == [scenario, strategy])
        assert f"{np.mean(values):.2f} ± {np.std(values):.2f}" in row
        assert row.split()[3] == str(seeds)  # n_seeds (the backbone name has no spaces)


def test_parse_names_and_seeds():
    assert sweep.parse_seeds("0,1,2") == [0, 1, 2]
    assert sweep.parse_seeds("0-2,7,1") == [0, 1, 2, 7]
    assert sweep.parse_names("a, b,a", "strategies") == ["a", "b"]
    with pytest.raises(config.ConfigError, match="not a seed"):
        sweep.parse_seeds("0,x")
    with pytest.raises(config.ConfigError, match="comma-separated"):
        sweep.parse_names(" , ", "scenarios")


def test_run_ids_derive_from_the_resolved_config():
    cells, incompatible = sweep.expand(["digits-tiny"], ["finetune", "joint"], [0, 1], {"train.epochs": "1"}, True)
    again, _ = sweep.expand(["digits-tiny"], ["finetune", "joint"], [0, 1], {"train.epochs": "1"}, True)
    other, _ = sweep.expand(["digits-tiny"], ["finetune"], [0], {"train.epochs": "2"}, True)
    assert incompatible == [] and len(cells) == 4
    assert [c.run_id for c in cells] == [c.run_id for c in again]
    assert len({c.run_id for c in cells}) == 4
    assert cells[0].run_id.startswith("digits-tiny-finetune-s0-") and cells[0].run_id != other[0].run_id


def test_bad_options_are_one_line_errors(results_root):
    with pytest.raises(config.ConfigError, match=r"unknown config key 'train\.lrr'"):
        sweep.run_sweep(scenarios="digits-tiny", strategies="finetune", seeds="0", root=results_root,
                        overrides=["train.lrr=1"])  # fmt: skip
    with pytest.raises(config.ConfigError, match="--retries"):
        sweep.run_sweep(scenarios="digits-tiny", strategies="finetune", seeds="0", root=results_root, retries=-1)
    with pytest.raises(config.ConfigError, match="--address is for --backend ray"):
        sweep.make_backend("local", jobs=1, address="auto", cpus_per_run=1, gpus_per_run=0)
    assert local_gpu_slots(0.5, 2) == ["0", "0", "1", "1"] and local_gpu_slots(2, 4) == ["0,1", "2,3"]
    with pytest.raises(config.ConfigError, match="no CUDA GPU"):
        local_gpu_slots(1, 0)


def test_store_returned_replaces_a_run_folder(tmp_path):
    src = tmp_path / "src"
    (src / "checkpoints").mkdir(parents=True)
    (src / "run.json").write_text("{}")
    (src / "checkpoints" / "task-001.pt").write_bytes(b"\x00\x01")
    root = tmp_path / "root"
    (root / "runs" / "r1" / "checkpoints").mkdir(parents=True)
    (root / "runs" / "r1" / "checkpoints" / "task-000.pt").write_bytes(b"old")
    dest = store_returned(pack(src), root, "r1")
    assert sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file()) == [
        "checkpoints/task-001.pt", "run.json"]  # fmt: skip
    assert [p.name for p in (root / "runs").iterdir()] == ["r1"]
    with pytest.raises(ValueError, match="outside"):
        store_returned({"../evil": b""}, root, "r2")


def test_local_2x2x2_sweep_killed_midway_then_completed(workdir):
    """The CLI sweep is killed (SIGKILL, pool workers included) after its first finished cell; running the same
    command again skips the finished cells, resumes the killed ones and starts the rest; a third run does
    nothing. The leaderboard shows mean ± std over the two seeds."""
    root = workdir / "results"
    args = [sys.executable, "-m", "cl_suite.cli", "sweep", "--scenarios", "digits-tiny,sweep_plugins:DigitsReversed",
            "--strategies", "finetune,joint", "--seeds", "0,1", "--tiny", "--set", FAST[0], "--jobs", "2",
            "--results", str(root)]  # fmt: skip
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if any(r.get("status") == "success" for r in records(root).values()):
            break
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    before = records(root)
    finished = {k for k, r in before.items() if r["status"] == "success"}
    unfinished = {k for k, r in before.items() if r["status"] != "success"}
    assert 1 <= len(finished) < 8, before
    stamps = {k: (root / "runs" / k / "run.json").stat().st_mtime_ns for k in finished}

    again, third = io.StringIO(), io.StringIO()  # the same sweep again, in this process (saves a start-up)
    grid = {"scenarios": args[5], "strategies": args[7], "seeds": "0,1", "tiny": True, "overrides": FAST, "jobs": 2}
    assert sweep.run_sweep(root=root, out=again, **grid) == 0
    again = again.getvalue()
    assert (f"{len(finished)} already finished, {len(unfinished)} to resume, "
            f"{8 - len(finished) - len(unfinished)} to start") in again  # fmt: skip
    resumed = {line.split("(")[-1].rstrip(")") for line in again.splitlines() if line.startswith("  resume ")}
    assert resumed == unfinished
    after = records(root)
    assert len(after) == 8 and all(r["status"] == "success" for r in after.values())
    assert {k: (root / "runs" / k / "run.json").stat().st_mtime_ns for k in finished} == stamps
    assert f"{8 - len(finished)} ran, {len(finished)} already finished, 0 failed" in again
    check_board(again, root, cells=8, seeds=2)

    assert sweep.run_sweep(root=root, out=third, **grid) == 0
    third = third.getvalue()
    assert "8 already finished, 0 to resume, 0 to start" in third and "backend" not in third
    assert third.split("already finished, 0 failed")[1] == again.split("already finished, 0 failed")[1]


def test_failed_cells_are_retried_and_never_hide_the_others(workdir):
    """A cell that fails once is retried and resumes from its checkpoint; a cell that always fails is reported
    after its retries; the other cells finish. Uses the ``return`` transfer: failed folders travel back and forth."""
    root, out = workdir / "results", io.StringIO()
    code = sweep.run_sweep(scenarios="digits-tiny", strategies="finetune,sweep_plugins:Flaky,sweep_plugins:Broken",
                           seeds="0", root=root, overrides=FAST, tiny=True, jobs=2, retries=1, transfer="return",
                           out=out)  # fmt: skip
    text = out.getvalue()
    assert code == 1, text
    runs = records(root)
    status = {r["strategy"]: r["status"] for r in runs.values()}
    assert status == {"finetune": "success", "sweep_plugins:Flaky": "success", "sweep_plugins:Broken": "failed"}
    assert "FAILED digits-tiny × sweep_plugins:Flaky seed 0: RunError: RuntimeError: flaky failure on purpose; retry 1/1" in text
    assert text.count("FAILED digits-tiny × sweep_plugins:Broken") == 2 and "giving up" in text
    assert "2 ran, 0 already finished, 1 failed" in text
    flaky = next(k for k, r in runs.items() if r["strategy"] == "sweep_plugins:Flaky")
    log = (root / "sweep-logs" / f"{flaky}.log").read_text()
    assert "--- attempt 2" in log and f"resuming {flaky} after task 1/2" in log
    board = text[re.search(r"scenario +strategy", text).start() :]
    assert "finetune" in board and "sweep_plugins:Flaky" in board and "Broken" not in board


def test_ray_2x2x2_sweep_with_records_returned(workdir):
    """Ray started locally (2 CPUs); workers run in private folders and return them; same grid as the local
    test, so the numbers must equal a local sweep of the same cells."""
    ray = pytest.importorskip("ray")
    root, out = workdir / "results", io.StringIO()
    ray.init(address="local", _node_ip_address="127.0.0.1", num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        code = sweep.run_sweep(scenarios="digits-tiny,sweep_plugins:DigitsReversed", strategies="finetune,joint",
                               seeds="0,1", root=root, overrides=FAST, tiny=True, backend="ray", out=out)  # fmt: skip
    finally:
        ray.shutdown()
    text = out.getvalue()
    assert code == 0, text
    assert "backend ray" in text and "results return (returned to this process)" in text
    assert "8 ran, 0 already finished, 0 failed" in text
    check_board(text, root, cells=8, seeds=2)
    for run_id in records(root):
        assert (root / "runs" / run_id / "evals.jsonl").stat().st_size > 0
        assert list((root / "runs" / run_id / "checkpoints").glob("task-*.pt"))


def test_ray_missing_says_how_to_install(monkeypatch, results_root):
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(config.ConfigError, match=r"pip install 'cl-suite\[ray\]'"):
        sweep.run_sweep(scenarios="digits-tiny", strategies="finetune", seeds="0", root=results_root,
                        overrides=FAST, tiny=True, backend="ray")  # fmt: skip
