"""The published tier: every registered strategy on every tiny scenario, run by ``cl-suite sweep`` into
``results/published`` (``make published`` / ``cl-suite published``).

Why a module: the tier is one list (scenario, seeds, budget overrides), and re-running it after new strategies are
registered must only add their cells. Each scenario is one ``cl-suite sweep`` over ``registry.names("strategy")`` (the
strategies registered *now*), so finished cells are skipped by config hash and incompatible pairs are noted, not run.
Runs keep no checkpoints (``train.keep_checkpoints=none``). Each invocation appends the machine, the package
versions, the git commit and its wall time per scenario to ``<root>/manifest.json``.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TextIO

from cl_suite import config as config_mod

MANIFEST = "manifest.json"


@dataclass(frozen=True)
class Entry:
    """One scenario of the tier: its seeds and the overrides that set its published budget."""

    scenario: str
    seeds: str = "0-2"
    overrides: tuple[str, ...] = ()
    note: str = ""


TIER: tuple[Entry, ...] = (
    Entry("digits-tiny"),
    Entry("avalanche-digits"),
    Entry("fscil-tiny"),
    Entry("clip-tiny"),
    Entry("clip-tiny-xtail"),
    Entry("organ-tiny"),
    Entry("llm-tiny", seeds="0", overrides=("tiny=true",),
          note="one seed, --tiny (2 tasks, 64 examples per split, tiny-llama): the full SmolLM2 stream is too slow"),
)  # fmt: skip
COMMON = ("train.keep_checkpoints=none",)


def sweep_args(entry: Entry, strategies: list[str]) -> dict:
    """The ``run_sweep`` arguments of one tier entry (also printed as the equivalent ``cl-suite sweep`` line)."""
    return {"scenarios": entry.scenario, "strategies": ",".join(strategies), "seeds": entry.seeds,
            "overrides": [*COMMON, *entry.overrides]}  # fmt: skip


def command_line(args: dict, root: Path, jobs: int | None) -> str:
    sets = " ".join(f"--set {o}" for o in args["overrides"])
    extra = f" --jobs {jobs}" if jobs else ""
    return (f"cl-suite sweep --scenarios {args['scenarios']} --strategies {args['strategies']} --seeds {args['seeds']}"
            f" {sets} --results {root}{extra}")  # fmt: skip


def run_published(root: str | Path = "results/published", *, scenarios: list[str] | None = None,
                  strategies: list[str] | None = None, jobs: int | None = None,
                  out: TextIO = sys.stdout) -> int:  # fmt: skip
    """Run the tier (or the named part of it); returns 1 if any sweep left a failed cell."""
    from cl_suite import registry
    from cl_suite.env_info import environment
    from cl_suite.sweep import run_sweep

    root = Path(root)
    known = {e.scenario: e for e in TIER}
    unknown = [s for s in scenarios or [] if s not in known]
    if unknown:
        raise config_mod.ConfigError(f"not in the published tier: {', '.join(unknown)}; tier: {', '.join(known)}")
    names = strategies or registry.names("strategy")
    entries = [known[s] for s in scenarios] if scenarios else list(TIER)
    root.mkdir(parents=True, exist_ok=True)
    import torch

    record = {"started_at": _now(), "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                                                 "processor": platform.processor() or platform.machine()},
              "environment": environment(torch.device("cpu")), "jobs": jobs, "strategies": names, "sweeps": []}  # fmt: skip
    rc, t0 = 0, time.perf_counter()
    for entry in entries:
        args = sweep_args(entry, names)
        print(f"published: {command_line(args, root, jobs)}", file=out, flush=True)
        t = time.perf_counter()
        code = run_sweep(root=root, jobs=jobs, out=out, **args)
        rc = max(rc, code)
        record["sweeps"].append({"scenario": entry.scenario, "seeds": entry.seeds, "overrides": args["overrides"],
                                 "note": entry.note, "exit_code": code,
                                 "wall_s": round(time.perf_counter() - t, 1)})  # fmt: skip
    record.update(wall_s=round(time.perf_counter() - t0, 1), ended_at=_now())
    manifest = root / MANIFEST
    history = json.loads(manifest.read_text()) if manifest.exists() else {"invocations": []}
    history["invocations"].append(record)
    manifest.write_text(json.dumps(history, indent=1) + "\n")
    print(f"published: {len(entries)} sweeps in {record['wall_s']} s; manifest {manifest}", file=out)
    return rc


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
