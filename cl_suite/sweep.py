"""Sweeps: a grid of scenario × strategy × seed, each cell an independent, resumable run.

Every cell resolves to a full run config; its run id is ``<scenario>-<strategy>-s<seed>-<config hash>``, derived
from that config alone (no timestamp), so running the same sweep again finds the same folders:

- a cell whose config hash matches a successful run anywhere under the results root is skipped (runs made by
  ``cl-suite run`` count too);
- a cell whose own folder holds a running or failed run (a killed or failed sweep) is resumed from its last
  finished task (runner.resume), not restarted;
- the other cells start fresh.

A failed cell is reported and retried up to ``retries`` times (each retry resumes its folder) while the other
cells go on; the sweep ends by printing the leaderboard of its cells (mean ± std over seeds) and exits 1 if a cell
still failed. Cells run on a backend from :mod:`cl_suite.sweep_backends`. Layout after reference/benchmarks.md
§10.2 ("idempotent run ids", "skip finished cells"; Mammoth's grid launcher and Ray Tune's grid search).
"""

from __future__ import annotations

import itertools
import os
import re
import sys
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from cl_suite import config as config_mod
from cl_suite.locks import FolderLock
from cl_suite.results import RUN_FILE, RunTables, check_root, load_runs
from cl_suite.safe_text import one_line
from cl_suite.sweep_backends import clean_returned

BACKENDS = ("local", "ray")
TRANSFERS = ("shared", "return")


@dataclass(eq=False)
class Cell:
    """One grid cell and its resolved config."""

    scenario: str
    strategy: str
    seed: int
    config: config_mod.RunConfig

    @property
    def config_hash(self) -> str:
        return self.config.config_hash()

    @property
    def run_id(self) -> str:
        slug = re.sub(r"[^a-z0-9]+", "-", f"{self.scenario}-{self.strategy}".lower()).strip("-")
        return f"{slug}-s{self.seed}-{self.config_hash}"

    @property
    def label(self) -> str:
        return f"{self.scenario} × {self.strategy} seed {self.seed}"


@dataclass
class Plan:
    """The grid against a results root: cells already finished (with the run that finished them), to run."""

    cells: list[Cell]
    finished: dict[int, str] = field(default_factory=dict)  # index in cells -> run_id of a successful run
    resume: set[int] = field(default_factory=set)  # indices whose own folder holds an unfinished run
    incompatible: list[str] = field(default_factory=list)

    @property
    def todo(self) -> list[int]:
        return [i for i in range(len(self.cells)) if i not in self.finished]


@dataclass
class Outcome:
    ran: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # run_id -> last error
    run_ids: list[str] = field(default_factory=list)  # one run per cell, for the leaderboard


# -- the grid --------------------------------------------------------------------------------------------------
def parse_names(text: str, what: str) -> list[str]:
    names = [n.strip() for n in (text or "").split(",") if n.strip()]
    if not names:
        raise config_mod.ConfigError(f"--{what} needs a comma-separated list of names, e.g. --{what} a,b")
    return list(dict.fromkeys(names))


def parse_seeds(text: str) -> list[int]:
    """``"0,1,2"`` or a range ``"0-4"`` (inclusive), or both mixed: ``"0-2,7"``."""
    seeds: list[int] = []
    for part in (p.strip() for p in str(text).split(",")):
        match = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if not match:
            raise config_mod.ConfigError(f"--seeds: {part!r} is not a seed; give integers or ranges, e.g. 0,1,2 or 0-4")
        lo, hi = int(match[1]), int(match[2] or match[1])
        seeds += range(lo, hi + 1)
    return list(dict.fromkeys(seeds))


def expand(scenarios: list[str], strategies: list[str], seeds: list[int], overrides: dict[str, str],
           tiny: bool = False, raw: dict[str, Any] | None = None) -> tuple[list[Cell], list[str]]:  # fmt: skip
    """Resolve every compatible (scenario, strategy, seed); return the cells and a note per incompatible pair.
    Bad names or keys raise before anything runs."""
    from cl_suite import registry
    from cl_suite.api import incompatibility

    cells, incompatible = [], []
    for scenario, strategy in itertools.product(scenarios, strategies):
        reason = incompatibility(registry.load("scenario", scenario), registry.load("strategy", strategy))
        if reason:
            incompatible.append(f"{strategy} on {scenario}: {reason}")
            continue
        for seed in seeds:
            cell_overrides = {**overrides, "scenario.name": scenario, "strategy.name": strategy, "seed": str(seed)}
            if tiny:
                cell_overrides["tiny"] = "true"
            cfg = config_mod.resolve(raw or {}, cell_overrides)
            cells.append(Cell(scenario, strategy, seed, cfg))
    return cells, incompatible


def plan(cells: list[Cell], root: Path, incompatible: list[str] | None = None) -> Plan:
    """Match cells against the results root by config hash."""
    result = Plan(cells, incompatible=list(incompatible or []))
    runs = load_runs(root).runs
    done = runs[runs["status"] == "success"]
    for i, cell in enumerate(cells):
        own = root / "runs" / cell.run_id
        matches = done[done["config_hash"] == cell.config_hash]
        if cell.run_id in set(matches["run_id"]):
            result.finished[i] = cell.run_id
        elif not matches.empty:
            result.finished[i] = str(matches.sort_values("run_id")["run_id"].iloc[-1])
        elif (own / RUN_FILE).exists():
            result.resume.add(i)
    return result


# -- running ---------------------------------------------------------------------------------------------------
def make_job(cell: Cell, root: Path, transfer: str, threads: int | None) -> dict[str, Any]:
    """What a worker needs: the resolved config (not the overrides, so every node runs the same config)."""
    from cl_suite.sweep_backends import pack

    job = {"run_id": cell.run_id, "config": cell.config.to_dict(), "config_hash": cell.config_hash,
           "threads": threads, "root": str(root.resolve()) if transfer == "shared" else None}  # fmt: skip
    own = root / "runs" / cell.run_id
    if transfer == "return" and (own / RUN_FILE).exists():
        job["files"] = pack(own)
    return job


def execute(sweep: Plan, backend, root: Path, *, transfer: str, retries: int, threads: int | None,
            out: TextIO = sys.stdout) -> Outcome:  # fmt: skip
    """Run the cells of ``sweep`` that are not finished, ``backend.capacity`` at a time, with retries."""
    from cl_suite.sweep_backends import failed_result, store_returned

    outcome = Outcome()
    pending = deque(sweep.todo)
    attempts: Counter[int] = Counter()
    in_flight: dict[Any, int] = {}
    total, finished_now = len(pending), 0
    logs = root / "sweep-logs"
    logs.mkdir(parents=True, exist_ok=True)
    try:
        while pending or in_flight:
            while pending and len(in_flight) < backend.capacity:
                i = pending.popleft()
                cell = sweep.cells[i]
                how = "resume" if (root / "runs" / cell.run_id / RUN_FILE).exists() else "start"
                print(f"  {how:<6} {cell.label}  ({cell.run_id})", file=out, flush=True)
                in_flight[backend.submit(make_job(cell, root, transfer, threads))] = i
            handle, result = backend.wait_one(in_flight)
            i = in_flight.pop(handle)
            cell = sweep.cells[i]
            if isinstance(result, BaseException):
                result = failed_result(cell.run_id, result)
            if result.get("files"):
                store_returned(result["files"], root, cell.run_id)
            with open(logs / f"{cell.run_id}.log", "a", encoding="utf-8") as f:
                f.write(f"--- attempt {attempts[i] + 1} on {result.get('host')}: {result['status']}\n{result['log']}")
            if result["status"] == "success":
                finished_now += 1
                outcome.ran.append(cell.run_id)
                outcome.failed.pop(cell.run_id, None)
                print(f"  done   [{finished_now}/{total}] {cell.label}  {_headline(root, cell.run_id)}"
                      f"  ({result['seconds']} s on {result['host']})", file=out, flush=True)  # fmt: skip
                continue
            attempts[i] += 1
            outcome.failed[cell.run_id] = result["error"]
            again = attempts[i] <= retries
            note = f"retry {attempts[i]}/{retries}" if again else f"giving up (log: {logs / cell.run_id}.log)"
            print(f"  FAILED {cell.label}: {one_line(result['error'])}; {note}", file=out, flush=True)
            if again:
                pending.append(i)
    except KeyboardInterrupt:
        backend.close(cancel=True)
        raise
    backend.close()
    outcome.run_ids = [sweep.finished.get(i, cell.run_id) for i, cell in enumerate(sweep.cells)]
    return outcome


def _headline(root: Path, run_id: str) -> str:
    """The run's first summary, e.g. ``last=25.00``, read from its record."""
    import json

    try:
        record = json.loads((root / "runs" / run_id / RUN_FILE).read_text())
        name, value = next(iter((record.get("summary") or {}).items()))
        return one_line(f"{name}={value:.2f}")
    except (OSError, ValueError, StopIteration, TypeError):
        return ""


def cells_board(root: Path, run_ids: list[str]):
    """The leaderboard (leaderboard.leaderboard) restricted to the given runs: one run per sweep cell."""
    from cl_suite import leaderboard

    tables = load_runs(root)
    keep = set(run_ids)
    runs = tables.runs[tables.runs["run_id"].isin(keep)].drop_duplicates("run_id")
    evals = tables.evals[tables.evals["run_id"].isin(keep)]
    return leaderboard.leaderboard(RunTables(runs, evals))


def make_backend(name: str, *, jobs: int | None, address: str | None, cpus_per_run: float | None,
                 gpus_per_run: float):  # fmt: skip
    from cl_suite import sweep_backends

    if name == "local":
        if address:
            raise config_mod.ConfigError("--address is for --backend ray; the local backend runs on this machine")
        default = max(1, int((os.cpu_count() or 1) // max(cpus_per_run or 1, 1)))
        return sweep_backends.LocalBackend(jobs or default, gpus_per_run)
    if name == "ray":
        return sweep_backends.RayBackend(address, jobs, cpus_per_run or 1.0, gpus_per_run)
    raise config_mod.ConfigError(f"unknown backend {name!r}; accepted: {', '.join(BACKENDS)}")


def run_sweep(*, scenarios: str, strategies: str, seeds: str, root: str | Path, overrides: list[str] | None = None,
              config_file: str | None = None, tiny: bool = False, backend: str = "local", address: str | None = None,
              jobs: int | None = None, cpus_per_run: float | None = None, gpus_per_run: float = 0.0, retries: int = 1,
              transfer: str | None = None, fmt: str = "text", out: TextIO = sys.stdout) -> int:  # fmt: skip
    """The whole ``cl-suite sweep``: expand, skip finished cells, run the rest, print the cells' leaderboard.
    Returns the exit code: 0 when every cell finished, 1 when a cell still failed after its retries."""
    from cl_suite import leaderboard

    root = Path(root)
    if retries < 0 or (jobs is not None and jobs < 1) or (cpus_per_run or 1) <= 0 or gpus_per_run < 0:
        raise config_mod.ConfigError("--retries must be >= 0, --jobs >= 1, --cpus-per-run > 0, --gpus-per-run >= 0")
    transfer = transfer or ("return" if backend == "ray" else "shared")
    if transfer not in TRANSFERS:
        raise config_mod.ConfigError(f"unknown --transfer {transfer!r}; accepted: {', '.join(TRANSFERS)}")
    raw = config_mod.load_yaml(config_file) if config_file else None
    scenario_names, strategy_names = parse_names(scenarios, "scenarios"), parse_names(strategies, "strategies")
    seed_list = parse_seeds(seeds)
    cells, incompatible = expand(scenario_names, strategy_names, seed_list,
                                 config_mod.parse_overrides(overrides or []), tiny, raw)  # fmt: skip
    for note in incompatible:
        print(f"sweep: skipping incompatible pair: {note}", file=out)
    if not cells:
        raise config_mod.ConfigError("no compatible scenario × strategy pair in this sweep (see the notes above)")
    check_root(root)
    root.mkdir(parents=True, exist_ok=True)
    lock = FolderLock(root, f"results root {root} (a sweep)").acquire()  # one sweep per root: no cell run twice
    try:
        clean_returned(root)
        sweep = plan(cells, root, incompatible)
        print(f"sweep: {len(cells)} cells ({len(scenario_names)} scenarios × {len(strategy_names)} strategies × "
              f"{len(seed_list)} seeds{', minus incompatible pairs' if incompatible else ''}) under {root}: "
              f"{len(sweep.finished)} already finished, {len(sweep.resume)} to resume, "
              f"{len(sweep.todo) - len(sweep.resume)} to start", file=out, flush=True)  # fmt: skip
        outcome = Outcome(run_ids=[sweep.finished.get(i, c.run_id) for i, c in enumerate(cells)])
        if sweep.todo:
            engine = make_backend(backend, jobs=jobs, address=address, cpus_per_run=cpus_per_run,
                                  gpus_per_run=gpus_per_run)  # fmt: skip
            where = f" at {engine.address}" if getattr(engine, "address", None) else ""
            print(f"sweep: backend {engine.name}{where}, {engine.capacity} at a time, results {transfer} "
                  f"({'written by the workers' if transfer == 'shared' else 'returned to this process'})",
                  file=out, flush=True)  # fmt: skip
            # torch threads per run: the CPUs each run was given; locally by default this machine's CPUs shared out
            local_share = (os.cpu_count() or 1) // engine.capacity if backend == "local" else 1
            threads = max(1, int(cpus_per_run or local_share))
            try:
                outcome = execute(sweep, engine, root, transfer=transfer, retries=retries, threads=threads, out=out)
            except KeyboardInterrupt:
                print("\nsweep interrupted: run the same command again to finish the missing cells", file=sys.stderr)
                return 130
        print(f"\nsweep finished: {len(outcome.ran)} ran, {len(sweep.finished)} already finished, "
              f"{len(outcome.failed)} failed\n", file=out)  # fmt: skip
        for run_id, error in outcome.failed.items():
            print(f"failed: {run_id}: {one_line(error)}", file=out)
        print(leaderboard.render(cells_board(root, outcome.run_ids), fmt), file=out)
        return 1 if outcome.failed else 0
    finally:
        lock.release()
