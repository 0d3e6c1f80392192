"""The command line end to end, as a user runs it: exit codes, outputs, kill and resume, re-run from config."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from conftest import REPO, cli

from cl_suite import results


def final_matrix(run_dir):
    import pandas as pd

    record, evals = results.load_run(run_dir)
    R, _ = results.score_matrix(pd.DataFrame(evals), record["metric"], record["num_tasks"])
    return R


def only_run(root):
    (folder,) = (root / "runs").iterdir()
    return folder


def test_bad_input_exits_2_with_one_clear_line(results_root):
    r = cli("run", "--scenario", "nope", "--strategy", "finetune", "--results", str(results_root))
    assert r.returncode == 2
    assert "unknown scenario 'nope'" in r.stderr and "Known scenarios: " in r.stderr and "digits-tiny" in r.stderr
    r = cli("run", "--scenario", "digits-tiny", "--strategy", "finetune", "--set", "train.lr=abc",
            "--results", str(results_root))  # fmt: skip
    assert r.returncode == 2 and "train.lr: expected float, got 'abc'" in r.stderr
    r = cli("show", "nope", "--results", str(results_root))
    assert r.returncode == 2 and "no run 'nope'" in r.stderr
    assert not (results_root / "runs").exists()


def test_run_show_leaderboard(results_root):
    r = cli("run", "--scenario", "digits-tiny", "--strategy", "finetune", "--seed", "0", "--tiny", "--quiet",
            "--results", str(results_root))  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "score matrix" in r.stdout and "forgetting" in r.stdout
    run_id = only_run(results_root).name
    shown = cli("show", run_id, "--results", str(results_root))
    assert shown.returncode == 0 and "config:" in shown.stdout and "after digits-0-1" in shown.stdout
    for fmt, marker in (("text", "finetune"), ("markdown", "|"), ("csv", "last_mean"), ("latex", "\\begin{tabular}")):
        board = cli("leaderboard", "--format", fmt, "--results", str(results_root))
        assert board.returncode == 0 and marker in board.stdout and "digits-tiny" in board.stdout
    assert "n_seeds" in cli("leaderboard", "--results", str(results_root)).stdout


def test_list_shows_descriptions_and_settings():
    r = cli("list")
    assert r.returncode == 0
    assert "digits-tiny" in r.stdout and "[setting: cil]" in r.stdout and "Sequential fine-tuning" in r.stdout
    strategies, scenarios = cli("list", "strategies"), cli("list", "scenarios")
    assert strategies.returncode == scenarios.returncode == 0
    assert "finetune" in strategies.stdout and "digits-tiny" not in strategies.stdout
    assert "digits-tiny" in scenarios.stdout and "finetune" not in scenarios.stdout


def test_killed_run_resumes_to_the_same_matrix(results_root, tmp_path):
    args = ["--scenario", "digits-tiny", "--strategy", "finetune", "--seed", "0", "--quiet",
            "--set", "train.epochs=8"]  # fmt: skip
    proc = subprocess.Popen([sys.executable, "-m", "cl_suite.cli", "run", *args, "--results", str(results_root)],
                            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        runs = list((results_root / "runs").glob("*/checkpoints/task-001.pt"))
        if runs:
            os.kill(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.05)
    proc.wait()
    folder = only_run(results_root)
    record = json.loads((folder / "run.json").read_text())
    assert proc.returncode == -signal.SIGKILL and record["status"] == "running" and record["tasks_done"] < 5

    resumed = cli("run", "--resume", folder.name, "--quiet", "--results", str(results_root))
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads((folder / "run.json").read_text())["status"] == "success"

    fresh_root = tmp_path / "fresh"
    assert cli("run", *args, "--results", str(fresh_root)).returncode == 0
    assert (final_matrix(folder) == final_matrix(only_run(fresh_root))).all()
    assert cli("run", "--resume", folder.name, "--results", str(results_root)).returncode == 2  # already finished


def test_rerun_from_saved_config(results_root, tmp_path):
    assert cli("run", "--scenario", "digits-tiny", "--strategy", "joint", "--tiny", "--quiet", "--set",
               "train.epochs=2", "--results", str(results_root)).returncode == 0  # fmt: skip
    first = only_run(results_root)
    again_root = tmp_path / "again"
    r = cli("run", str(first / "config.yaml"), "--quiet", "--results", str(again_root))
    assert r.returncode == 0, r.stderr
    second = only_run(again_root)
    first_record, second_record = (json.loads((p / "run.json").read_text()) for p in (first, second))
    assert first_record["config_hash"] == second_record["config_hash"]
    assert (final_matrix(first) == final_matrix(second)).all()


def test_new_strategy_skeleton_runs(tmp_path, results_root):
    r = cli("new-strategy", "my-method", "--dir", str(tmp_path / "myplugins"))
    assert r.returncode == 0 and "MyMethod" in r.stdout
    assert cli("new-strategy", "my-method", "--dir", str(tmp_path / "myplugins")).returncode == 2  # exists
    assert cli("new-strategy", "Bad_Name").returncode == 2
    run = cli("run", "--tiny", "--quiet", "--scenario", "digits-tiny", "--strategy", "myplugins.my_method:MyMethod",
              "--results", str(results_root), cwd=tmp_path)  # fmt: skip
    assert run.returncode == 0, run.stderr
