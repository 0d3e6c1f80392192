"""Fault injection and bad input: each row of the README's Reliability table is tested here.

Bad input exits 2 with one line on stderr before a run folder exists; a failure after the start exits 1 with a
failed record; damaged records and checkpoints are named; one writer per run folder and per sweep root; children
die with their parent; nothing outside the results root is read or written; record text is data, not escapes.
"""

from __future__ import annotations

import errno
import io
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from conftest import REPO, eval_rows
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cl_suite import cli, config, leaderboard, locks, results, runner, safe_text
from cl_suite.config import BOUNDS, ConfigError, TrainConfig

BASE = ["run", "--scenario", "digits-tiny", "--strategy", "finetune", "--quiet"]


def main(capsys, *args: str) -> tuple[int, str, str]:
    code = cli.main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def one_error_line(err: str) -> bool:
    lines = [line for line in err.splitlines() if line.strip()]
    return len(lines) == 1 and lines[0].startswith("cl-suite: ") and "Traceback" not in err


# -- config values ---------------------------------------------------------------------------------------------
BAD_VALUES = [
    ("train.epochs", "0", ">= 1"), ("train.epochs", "-3", ">= 1"), ("train.max_steps", "-1", ">= 0"),
    ("train.batch_size", "0", ">= 1"), ("train.eval_batch_size", "0", ">= 1"), ("train.log_every", "0", ">= 1"),
    ("train.lr", "-0.1", "> 0"), ("train.lr", "0", "> 0"), ("train.lr", "nan", "finite"), ("train.lr", "inf", "finite"),
    ("train.weight_decay", "-1", ">= 0"), ("train.momentum", "1.5", "<= 1"), ("train.warmup_steps", "-1", ">= 0"),
    ("train.grad_clip", "-1e-3", ">= 0"), ("train.epochs", "1.5", "expected int"), ("train.epochs", "1e400", "expected int"),
    ("train.optimizer", "lion", "expected one of"), ("train.precision", "fp8", "expected one of"),
    ("seed", "-1", ">= 0"), ("seed", str(2**32), "<= 4294967295"), ("seed", str(2**64), "2**63"),
    ("device", "tpu", "cuda:N"), ("device", "cuda:x", "cuda:N"), ("device", "cuda", "CUDA is not available"),
    ("tiny", "maybe", "expected bool"), ("kernels", "cuda", "expected one of"),
]  # fmt: skip


@pytest.mark.parametrize(("key", "value", "fragment"), BAD_VALUES)
def test_bad_config_value_is_one_line_exit_2_before_any_folder(tmp_path, capsys, key, value, fragment):
    if value == "cuda" and __import__("torch").cuda.is_available():
        pytest.skip("this machine has CUDA")
    root = tmp_path / "results"
    code, _, err = main(capsys, *BASE, "--set", f"{key}={value}", "--results", str(root))
    assert code == 2 and one_error_line(err) and fragment in err and key.split(".")[-1] in err, err
    assert not root.exists()


TRAIN_NUMBERS = sorted(k.split(".", 1)[1] for k in BOUNDS if k.startswith("train.")
                       and not isinstance(getattr(config.TrainConfig(), k.split(".", 1)[1]), tuple))  # scalars
ANY_VALUE = st.one_of(st.integers(-(2**70), 2**70), st.floats(allow_nan=True, allow_infinity=True), st.booleans(),
                      st.none(), st.text(max_size=6))  # fmt: skip


def _in_bounds(value, bounds) -> bool:
    lo, hi, open_lo = bounds
    return math.isfinite(value) and (value > lo if open_lo else value >= lo) and (hi is None or value <= hi)


@settings(max_examples=400, deadline=None, derandomize=True, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(key=st.sampled_from(TRAIN_NUMBERS), value=ANY_VALUE, as_text=st.booleans())
def test_property_a_train_value_is_in_range_or_refused_naming_the_key(key, value, as_text):
    """Whatever a YAML file or --set gives, the config holds a value inside its bounds, or ConfigError says which key."""
    given_value = str(value) if as_text else value
    try:
        train = config.build_dataclass(TrainConfig, {key: given_value}, "train")
    except ConfigError as e:
        assert str(e).startswith(f"train.{key}") and "\n" not in str(e)
        return
    got = getattr(train, key)
    assert not isinstance(got, bool) and _in_bounds(got, BOUNDS[f"train.{key}"])


@settings(max_examples=200, deadline=None, derandomize=True, database=None)
@given(value=st.one_of(st.integers(-(2**70), 2**70), st.text(max_size=5)))
def test_property_seed_is_in_numpys_range_or_refused(value):
    try:
        top = config.build_dataclass(config._TopLevel, {"seed": value}, "")
    except ConfigError as e:
        assert str(e).startswith("seed") and "\n" not in str(e)
        return
    assert 0 <= top.seed <= config.SEED_MAX


@settings(max_examples=50, deadline=None, derandomize=True, database=None)
@given(values=st.lists(st.integers(-5, 5), min_size=1, max_size=4))
def test_property_a_list_value_is_checked_item_by_item(values):
    """A field that holds one number per task (e.g. epochs per task) is checked item by item."""
    bounds = BOUNDS["train.epochs"]
    if all(v >= 1 for v in values):
        config.check_bounds("train.epochs", values, bounds)
    else:
        bad = next(i for i, v in enumerate(values) if v < 1)
        with pytest.raises(ConfigError, match=rf"train\.epochs\[{bad}\]"):
            config.check_bounds("train.epochs", values, bounds)


def test_set_beats_flags_as_the_readme_says(tmp_path, capsys, monkeypatch):
    """Layering: YAML < CLI flags < --set (README, Configs)."""
    seen = {}

    def fake_start(cfg, root, **kwargs):
        seen["cfg"] = cfg
        raise cli.UsageError("stop")

    monkeypatch.setattr(runner, "start", fake_start)
    yaml_file = tmp_path / "c.yaml"
    yaml_file.write_text("scenario: digits-tiny\nstrategy: finetune\nseed: 5\n")
    main(capsys, "run", str(yaml_file), "--seed", "1", "--set", "seed=2")
    assert seen["cfg"].seed == 2
    main(capsys, "run", str(yaml_file), "--seed", "1")
    assert seen["cfg"].seed == 1
    main(capsys, "run", str(yaml_file), "--strategy", "joint", "--set", "strategy.name=finetune")
    assert seen["cfg"].strategy == "finetune"


# -- names and paths -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("strategy", [":Foo", ".foo:Bar", "foo:", "nomodule_here:X", "os:path", "a b:C", "nope"])
def test_bad_plugin_names_exit_2(tmp_path, capsys, strategy):
    root = tmp_path / "results"
    code, _, err = main(capsys, "run", "--scenario", "digits-tiny", "--strategy", strategy, "--results", str(root))
    assert code == 2 and one_error_line(err) and not root.exists(), err


def test_bad_paths_exit_2_with_one_line(tmp_path, capsys):
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    cases = [
        (["show", "/nonexistent/run"], "no run folder at /nonexistent/run"),
        (["run", "--resume", "/abs/missing"], "no run folder"),
        (["show", "nope", "--results", str(tmp_path)], "no run 'nope'"),
        (["show", "x", "--results", str(a_file)], "is a file"),
        (["leaderboard", "--results", str(a_file)], "is a file"),
        (["app", "--results", str(a_file)], "is a file"),
        ([*BASE, "--tiny", "--results", str(a_file)], "is a file"),
        ([*BASE, "--tiny", "--results", str(a_file / "below")], "is a file"),
        (["sweep", "--scenarios", "digits-tiny", "--strategies", "finetune", "--results", str(a_file)], "is a file"),
        (["run", str(tmp_path / "missing.yaml")], "config file not found"),
        (["run", "--resume", "x", "--seed", "1"], "--resume continues"),
        (["run", "--scenario", "fscil-cifar100", "--strategy", "prototype", "--results", str(tmp_path / "r")],
         "set scenario.root"),
        (["run", "--scenario", "fscil-cifar100", "--strategy", "prototype", "--set", f"scenario.root={tmp_path}",
          "--results", str(tmp_path / "r")], "cifar-100-python/train"),
    ]  # fmt: skip
    for args, fragment in cases:
        code, _, err = main(capsys, *args)
        assert code == 2 and one_error_line(err) and fragment in err, (args, err)
    assert not (tmp_path / "r").exists()


def _fail_mkdir(number):
    real = Path.mkdir

    def mkdir(self, *args, **kwargs):
        if self.name != "checkpoints" and "results" in self.parts:
            raise OSError(number, os.strerror(number), str(self))
        return real(self, *args, **kwargs)

    return mkdir


@pytest.mark.parametrize("number", [errno.EACCES, errno.EROFS, errno.ENOSPC])
def test_unwritable_or_full_root_exits_2_and_leaves_nothing(tmp_path, capsys, monkeypatch, number):
    """Read-only, read-only filesystem, disk full: simulated at the mkdir (tests run as root, where chmod does not
    stop writes), and at the first write inside the new folder."""
    root = tmp_path / "results"
    monkeypatch.setattr(Path, "mkdir", _fail_mkdir(number))
    code, _, err = main(capsys, *BASE, "--tiny", "--results", str(root))
    assert code == 2 and one_error_line(err) and os.strerror(number) in err and not root.exists(), err
    monkeypatch.undo()

    def full(path, data):
        raise OSError(number, os.strerror(number), str(path))

    monkeypatch.setattr(results, "atomic_write", full)
    code, _, err = main(capsys, *BASE, "--tiny", "--results", str(root))
    assert code == 2 and one_error_line(err) and os.strerror(number) in err, err
    assert list((root / "runs").iterdir()) == []  # the half-made folder is gone


def test_disk_full_after_the_start_fails_the_run_with_exit_1(tmp_path, capsys, monkeypatch):
    root = tmp_path / "results"

    def full(self, filename, rows):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self.path / filename))

    monkeypatch.setattr(results.RunStore, "append", full)
    code, _, err = main(capsys, *BASE, "--tiny", "--results", str(root))
    assert code == 1 and one_error_line(err) and "No space left" in err, err
    (folder,) = (root / "runs").iterdir()
    record = results.read_record(folder)
    assert record["status"] == "failed" and "No space left" in record["error"]


def test_read_only_root_by_chmod(tmp_path, capsys):
    if os.geteuid() == 0:
        pytest.skip("running as root: chmod does not stop root's writes (the mkdir test above simulates it)")
    root = tmp_path / "results"
    root.mkdir()
    root.chmod(0o500)
    try:
        code, _, err = main(capsys, *BASE, "--tiny", "--results", str(root))
    finally:
        root.chmod(0o700)
    assert code == 2 and "not writable" in err and not (root / "runs").exists()


# -- a finished run to damage ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A finished 2-task digits-tiny run that kept both checkpoints."""
    root = tmp_path_factory.mktemp("finished") / "results"
    cfg = config.resolve({"scenario": "digits-tiny", "strategy": "finetune", "tiny": True},
                         {"train.keep_checkpoints": "all", "train.epochs": "1"})  # fmt: skip
    return runner.start(cfg, root, out=io.StringIO(), progress=False).path


def copy_run(finished: Path, tmp_path: Path, name: str = "copy") -> Path:
    root = tmp_path / "results"
    folder = root / "runs" / name
    shutil.copytree(finished, folder)
    results.RunStore(folder).update(status="failed", run_id=name)
    return folder


@pytest.mark.parametrize("content", ["{\"schema_version\": 1, \"run_id", "[1, 2]", "\x00\xff garbage", ""])
def test_torn_or_foreign_run_json_is_named_under_show_resume_and_skipped_by_leaderboard(finished, tmp_path, capsys,
                                                                                         content):  # fmt: skip
    folder = copy_run(finished, tmp_path)
    (folder / "run.json").write_text(content, encoding="latin-1")
    for args in (["show", "copy"], ["run", "--resume", "copy"]):
        code, _, err = main(capsys, *args, "--results", str(tmp_path / "results"))
        assert code == 2 and one_error_line(err) and "run.json" in err, err
    with pytest.warns(UserWarning, match="skipped"):
        code, out, _ = main(capsys, "leaderboard", "--results", str(tmp_path / "results"))
    assert code == 0 and "no successful runs" in out


def test_unknown_summary_and_odd_values_still_show(finished, tmp_path, capsys):
    folder = copy_run(finished, tmp_path)
    results.RunStore(folder).update(summary={"made_up": 1.0, "last": "text", "forgetting": None}, direction="sideways")
    code, out, err = main(capsys, "show", "copy", "--results", str(tmp_path / "results"))
    assert code == 0 and "made_up" in out and "(not a cl-suite summary)" in out, err


def test_torn_and_foreign_eval_rows_read_as_missing(finished, tmp_path, capsys):
    folder = copy_run(finished, tmp_path)
    with open(folder / "evals.jsonl", "a") as f:
        f.write('{"after_task": "x", "eval_task": 0, "metric": "acc", "value": "high", "n": null}\n[1]\n{"after_ta')
    with pytest.warns(UserWarning, match="not valid JSON"):
        code, out, err = main(capsys, "show", "copy", "--results", str(tmp_path / "results"))
    assert code == 0 and "score matrix" in out, err


def test_corrupt_latest_checkpoint_falls_back_to_the_previous_one(finished, tmp_path):
    folder = copy_run(finished, tmp_path)
    latest = folder / "checkpoints" / "task-001.pt"
    latest.write_bytes(latest.read_bytes()[:100])  # truncated mid-write
    results.RunStore(folder).update(tasks_done=1)
    log = io.StringIO()
    runner.resume(folder, out=log, progress=False)
    assert "task-001.pt" in log.getvalue() and "previous kept one, task-000.pt" in log.getvalue()
    assert eval_rows(folder) == eval_rows(finished)
    assert results.read_record(folder)["status"] == "success"


def test_no_readable_checkpoint_names_the_files_and_how_to_start_over(finished, tmp_path, capsys):
    folder = copy_run(finished, tmp_path)
    for path in (folder / "checkpoints").iterdir():
        path.write_bytes(b"not a checkpoint")
    code, _, err = main(capsys, "run", "--resume", "copy", "--results", str(tmp_path / "results"))
    assert code == 1 and one_error_line(err) and "task-001.pt" in err and "task-000.pt" in err, err
    assert "config.yaml" in err and results.read_record(folder)["status"] == "failed"


def test_stats_come_back_with_their_checkpoint_and_temp_files_are_cleaned(finished, tmp_path):
    """A kill between the checkpoint save and the record update: the record lacks the task's stats."""
    folder = copy_run(finished, tmp_path)
    (folder / "checkpoints" / "task-001.pt").unlink()
    store = results.RunStore(folder)
    store.update(strategy_stats=[], tasks_done=0)
    leftovers = [folder / ".run.json.abc.tmp", folder / "checkpoints" / ".task-001.pt.xyz.tmp"]
    for path in leftovers:
        path.write_bytes(b"half")
    runner.resume(folder, out=io.StringIO(), progress=False)
    assert results.read_record(folder)["strategy_stats"] == results.read_record(finished)["strategy_stats"]
    assert not any(p.exists() for p in leftovers)
    assert eval_rows(folder) == eval_rows(finished)


# -- one writer --------------------------------------------------------------------------------------------------
def test_a_run_folder_held_by_another_process_is_refused(finished, tmp_path, capsys):
    folder = copy_run(finished, tmp_path)
    before = (folder / "evals.jsonl").read_bytes()
    with locks.FolderLock(folder, "test"):
        code, _, err = main(capsys, "run", "--resume", "copy", "--results", str(tmp_path / "results"))
    assert code == 2 and one_error_line(err) and "in use by another cl-suite process" in err
    assert (folder / "evals.jsonl").read_bytes() == before


@pytest.mark.slow  # two processes importing torch: ~10 s alone, over 20 s on a loaded machine
def test_two_resumes_at_once_write_once(finished, tmp_path):
    """Two processes resume one run together: one resumes it, the other is refused (busy, or already finished)."""
    folder = copy_run(finished, tmp_path)
    (folder / "checkpoints" / "task-001.pt").unlink()
    args = [sys.executable, "-m", "cl_suite.cli", "run", "--resume", "copy", "--quiet", "--results",
            str(tmp_path / "results")]  # fmt: skip
    procs = [subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]  # fmt: skip
    outcomes = sorted((p.wait(timeout=300), p.stderr.read()) for p in procs)
    assert [code for code, _ in outcomes] == [0, 2], outcomes
    assert "in use" in outcomes[1][1] or "already finished" in outcomes[1][1]
    rows = eval_rows(folder)
    assert rows == eval_rows(finished) and len(rows) == len(set(rows))


def test_a_second_sweep_on_the_same_root_is_refused(tmp_path, capsys):
    root = tmp_path / "results"
    root.mkdir()
    with locks.FolderLock(root, "a sweep"):
        code, _, err = main(capsys, "sweep", "--scenarios", "digits-tiny", "--strategies", "finetune", "--tiny",
                            "--results", str(root))  # fmt: skip
    assert code == 2 and one_error_line(err) and "in use" in err and not (root / "runs").exists()


def _children(pid: int) -> list:
    import psutil

    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def _wait_gone(processes, seconds: float = 20.0) -> list:
    import psutil

    deadline = time.time() + seconds
    alive = list(processes)
    while alive and time.time() < deadline:
        alive = [p for p in alive if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
        time.sleep(0.2)
    return alive


def test_sweep_workers_die_with_a_killed_driver(tmp_path):
    root = tmp_path / "results"
    driver = subprocess.Popen([sys.executable, "-m", "cl_suite.cli", "sweep", "--scenarios", "digits-tiny",
                               "--strategies", "finetune,joint", "--jobs", "2", "--set", "train.epochs=50",
                               "--results", str(root)], cwd=REPO, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.time() + 120
    workers = []
    while time.time() < deadline and len(workers) < 2 and driver.poll() is None:
        workers = [p for p in _children(driver.pid) if "resource_tracker" not in " ".join(p.cmdline())]
        time.sleep(0.2)
    os.kill(driver.pid, signal.SIGKILL)
    driver.wait()
    assert workers, "the sweep started no worker"
    assert _wait_gone(workers) == []


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_app_server_dies_with_cl_suite_app(tmp_path, sig):
    pytest.importorskip("streamlit")
    app = subprocess.Popen([sys.executable, "-m", "cl_suite.cli", "app", "--port", "8765" if sig == signal.SIGTERM
                            else "8766", "--results", str(tmp_path)], cwd=REPO, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.time() + 60
    server = []
    while time.time() < deadline and not server:
        server = [p for p in _children(app.pid) if "streamlit" in " ".join(p.cmdline())]
        time.sleep(0.2)
    assert server, "no streamlit server started"
    os.kill(app.pid, sig)
    app.wait(timeout=30)
    assert _wait_gone(server) == []


# -- what a results folder may not do ------------------------------------------------------------------------------
def test_a_symlinked_run_folder_outside_the_root_is_refused(finished, tmp_path, capsys):
    outside = tmp_path / "elsewhere" / "victim"
    shutil.copytree(finished, outside)
    root = tmp_path / "results"
    (root / "runs").mkdir(parents=True)
    (root / "runs" / "evil").symlink_to(outside)
    for args in (["show", "evil"], ["run", "--resume", "evil"], ["show", str(root / "runs" / "evil")]):
        code, _, err = main(capsys, *args, "--results", str(root))
        assert code == 2 and one_error_line(err) and "outside the" in err, (args, err)
    code, _, err = main(capsys, "show", str(root / "runs" / "evil"))  # a path, no --results: its own root
    assert code == 2 and "outside the" in err
    assert results.load_runs(root).runs.empty  # the walk does not follow a linked folder
    (root / "runs" / "evil2").mkdir()
    (root / "runs" / "evil2" / "run.json").symlink_to(outside / "run.json")  # nor reads a linked record
    with pytest.warns(UserWarning, match="outside the results root"):
        assert results.load_runs(root).runs.empty


def test_a_plugin_named_by_a_run_folder_is_not_imported_unless_installed(finished, tmp_path, capsys, monkeypatch):
    folder = copy_run(finished, tmp_path)
    marker = tmp_path / "imported"
    (tmp_path / "evilplugin.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    monkeypatch.chdir(tmp_path)
    text = (folder / "config.yaml").read_text().replace("name: finetune", "name: evilplugin:Evil")
    (folder / "config.yaml").write_text(text)
    code, _, err = main(capsys, "run", "--resume", "copy", "--results", str(tmp_path / "results"))
    assert code == 2 and one_error_line(err) and "not an installed plugin" in err and not marker.exists(), err
    code, _, err = main(capsys, "run", str(folder / "config.yaml"), "--results", str(tmp_path / "other"))
    assert code == 2 and "--allow-config-refs" in err and not marker.exists()
    code, _, err = main(capsys, "run", "--resume", "copy", "--allow-config-refs", "--results", str(tmp_path / "results"))
    assert code == 2 and marker.exists()  # allowed explicitly: imported (and then refused: it has no class Evil)


def test_record_text_reaches_the_terminal_and_exports_defused(finished, tmp_path, capsys):
    folder = copy_run(finished, tmp_path)
    nasty = "=cmd|' /C calc'!A0\x1b]52;c;aGk=\x07\x1b[2J"
    results.RunStore(folder).update(status="success", strategy=nasty, error="\x1b[31mred\x9b", tasks=["\x1b[1mt0", "t1"])
    code, out, _ = main(capsys, "show", "copy", "--results", str(tmp_path / "results"))
    assert code == 0 and "\x1b" not in out and "\x07" not in out and "\x9b" not in out and "\\x1b" in out
    for fmt in ("text", "markdown", "latex", "csv"):
        code, out, _ = main(capsys, "leaderboard", "--format", fmt, "--results", str(tmp_path / "results"))
        assert code == 0 and "\x1b" not in out and "\x07" not in out, fmt
    code, out, _ = main(capsys, "leaderboard", "--format", "csv", "--results", str(tmp_path / "results"))
    cells = pd.read_csv(io.StringIO(out))["strategy"]
    assert all(c.startswith("'=") for c in cells)
    board = pd.DataFrame([{"scenario": "a&b_%$#{}~^\\", "strategy": "-1+1", "backbone": "@x", "n_seeds": 1,
                           "last_mean": 1.0, "last_std": 0.0, **dict.fromkeys(leaderboard.COST, 1.0)}])  # fmt: skip
    latex = leaderboard.render(board, "latex")
    assert r"a\&b\_\%\$\#\{\}\textasciitilde{}\textasciicircum{}\textbackslash{}" in latex
    assert [safe_text.csv_cell(v) for v in ("-1+1", "@x", "+x", "ok", 3.0)] == ["'-1+1", "'@x", "'+x", "ok", 3.0]


def test_an_unexpected_error_is_one_line_and_debug_shows_the_traceback(capsys, monkeypatch):
    def boom(args):
        raise ZeroDivisionError("inside")

    monkeypatch.setattr(cli, "cmd_list", boom)
    code, _, err = main(capsys, "list")
    assert code == 1 and "unexpected error: ZeroDivisionError: inside" in err and "Traceback" not in err
    for args in (["--debug", "list"], ["list", "--debug"]):
        code, _, err = main(capsys, *args)
        assert code == 1 and "Traceback" in err and "ZeroDivisionError" in err


@pytest.mark.slow
def test_kills_at_random_points_then_resume_give_the_uninterrupted_matrix(tmp_path):
    """SIGKILL a run at three seeded random moments (each resume killed again), then let it finish: the score matrix
    and the strategy stats equal an uninterrupted run's, and no temp file or lock holder is left."""
    import random

    rng = random.Random(28)
    root = tmp_path / "results"
    args = [sys.executable, "-m", "cl_suite.cli", "run", "--scenario", "digits-tiny", "--strategy", "finetune",
            "--quiet", "--set", "train.epochs=3", "--results", str(root)]  # fmt: skip
    command = args
    for _ in range(3):
        proc = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(4.0, 12.0))
        proc.kill()
        proc.wait()
        folders = list((root / "runs").iterdir()) if (root / "runs").exists() else []
        if folders:
            command = [*args[:4], "--resume", folders[0].name, "--quiet", "--results", str(root)]
    if command is args:
        pytest.skip("the machine is too slow: no run folder within the kill windows")
    final = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert final.returncode in (0, 2), final.stderr  # 2: a kill landed after the run had already finished
    (folder,) = (root / "runs").iterdir()
    fresh = runner.start(config.resolve(results.read_record(folder)["config"]), tmp_path / "fresh", out=io.StringIO(),
                         progress=False)  # fmt: skip
    assert eval_rows(folder) == eval_rows(fresh.path)
    assert [s["task"] for s in results.read_record(folder)["strategy_stats"]] == list(range(5))
    assert not list(folder.rglob(".*.tmp"))


@pytest.mark.slow
def test_sweep_killed_at_a_random_moment_then_rerun_writes_each_cell_once(tmp_path):
    """SIGKILL a 2-cell sweep driver at a seeded random moment: its workers die with it, and the re-run finishes
    every cell with each evaluation row written once."""
    import random

    root = tmp_path / "results"
    args = [sys.executable, "-m", "cl_suite.cli", "sweep", "--scenarios", "digits-tiny", "--strategies",
            "finetune,joint", "--jobs", "2", "--set", "train.epochs=2", "--results", str(root)]  # fmt: skip
    driver = subprocess.Popen(args, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(random.Random(28).uniform(8.0, 20.0))
    workers = _children(driver.pid)
    driver.kill()
    driver.wait()
    assert _wait_gone(workers) == []
    again = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stderr
    folders = sorted((root / "runs").iterdir())
    assert len(folders) == 2
    for folder in folders:
        rows = eval_rows(folder)
        assert len(rows) == len(set(rows)) and results.read_record(folder)["status"] == "success"
