"""The ``cl-suite`` command line: run | list | show | leaderboard | new-strategy.

Exit codes: 0 ok, 1 the run failed, 2 bad input (unknown name or key, bad value, missing file).
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from pathlib import Path

DEFAULT_RESULTS = "results"


class UsageError(Exception):
    """Bad input: printed as one line, exit code 2."""


def _results_root(args) -> Path:
    return Path(args.results or os.environ.get("CL_SUITE_RESULTS") or DEFAULT_RESULTS)


def _run_dir(root: Path, run_id: str) -> Path:
    """A run folder by id (under runs/ or anywhere below the root) or by path."""
    direct = Path(run_id)
    if (direct / "run.json").exists():
        return direct
    for candidate in [root / "runs" / run_id, *root.rglob(run_id)]:
        if (candidate / "run.json").exists():
            return candidate
    raise UsageError(f"no run {run_id!r} under {root} (see `cl-suite leaderboard --results {root}`)")


# -- commands --------------------------------------------------------------------------------------------------
def cmd_run(args) -> int:
    from cl_suite import config, runner

    root = _results_root(args)
    if args.resume:
        store = runner.resume(_run_dir(root, args.resume), progress=not args.quiet)
    else:
        raw = config.load_yaml(args.config) if args.config else {}
        overrides = config.parse_overrides(args.set or [])
        for key in ("scenario", "strategy"):
            if getattr(args, key):
                overrides[f"{key}.name"] = getattr(args, key)
        if args.seed is not None:
            overrides["seed"] = str(args.seed)
        if args.tiny:
            overrides["tiny"] = "true"
        cfg = config.resolve(raw, overrides)
        store = runner.start(cfg, root, progress=not args.quiet)
    print(f"run {store.path.name}: success ({store.path})")
    _print_run(store.path)
    return 0


def cmd_list(args) -> int:
    from cl_suite import registry

    kinds = ["strategy", "scenario"] if args.kind in (None, "all") else [args.kind.rstrip("s")]
    for kind in kinds:
        print(f"{kind.capitalize()} plugins:")
        for name in registry.names(kind):
            info = registry.describe(kind, name)
            label = "settings" if kind == "strategy" else "setting"
            print(f"  {name:<24} {info.description}  [{label}: {', '.join(info.settings)}]")
        print()
    return 0


def cmd_show(args) -> int:
    _print_run(_run_dir(_results_root(args), args.run_id), full=True)
    return 0


def cmd_leaderboard(args) -> int:
    from cl_suite import leaderboard, results

    tables = results.load_runs(_results_root(args))
    board = leaderboard.leaderboard(tables, scenario=args.scenario)
    print(leaderboard.render(board, args.format))
    return 0


def cmd_new_strategy(args) -> int:
    from cl_suite.scaffold import write_strategy

    try:
        path, cls = write_strategy(args.name, Path(args.dir))
    except (ValueError, FileExistsError) as e:
        raise UsageError(str(e)) from e
    module = path.stem
    print(f"wrote {path}\ntry it:   cl-suite run --tiny --scenario digits-tiny --strategy {path.parent.name}.{module}:{cls}")
    print(f'register: add `{args.name} = "{path.parent.name}.{module}:{cls}"` under '
          '[project.entry-points."cl_suite.strategies"] in pyproject.toml, then `pip install -e .`')  # fmt: skip
    return 0


# -- output ----------------------------------------------------------------------------------------------------
def _print_run(path: Path, full: bool = False) -> None:
    import pandas as pd
    import yaml

    from cl_suite import metrics, results

    record, evals = results.load_run(path)
    evals_df = pd.DataFrame([{"n": None, **e} for e in evals], columns=results.EVAL_COLUMNS[1:])
    names = record.get("tasks") or [f"task{i}" for i in range(record.get("num_tasks", 0))]
    if full:
        print(f"run {record['run_id']}  status={record['status']}  scenario={record['scenario']}  "
              f"strategy={record['strategy']}  seed={record['seed']}  backbone={record.get('backbone')}")  # fmt: skip
        if record.get("error"):
            print(f"error: {record['error']}")
        print("\nconfig:\n" + yaml.safe_dump(record.get("config", {}), sort_keys=False).rstrip())
    if names and not evals_df.empty:
        R, _ = results.score_matrix(evals_df, record["metric"], len(names))
        matrix = pd.DataFrame(R, index=["before", *[f"after {n}" for n in names]], columns=names)
        print(f"\nscore matrix ({record['metric']}, rows: after training task, columns: evaluated task):")
        print(matrix.round(2).to_string())
    if record.get("summary"):
        direction = record.get("direction", "max")
        print("\nsummary:")
        for name, value in record["summary"].items():
            arrow = "↑" if metrics.direction(name, direction) == "max" else "↓"
            shown = "-" if value is None else f"{value:.2f}"
            print(f"  {name:<24}{shown:>8} {arrow}  {metrics.SUMMARIES[name].label}")
    cost = record.get("cost") or {}
    if cost:
        print("\ncost: " + ", ".join(f"{k}={v}" for k, v in cost.items()))
    if full and record.get("strategy_stats"):
        print("\nstrategy stats per task:")
        for stats in record["strategy_stats"]:
            print("  " + ", ".join(f"{k}={v}" for k, v in stats.items()))


# -- parser ----------------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cl-suite", description="Continual-learning benchmark suite.")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run a strategy on a scenario and write a run record")
    run.add_argument("config", nargs="?", help="a run config YAML (e.g. a finished run's config.yaml)")
    run.add_argument("--scenario", help="scenario name or module:Class (see `cl-suite list`)")
    run.add_argument("--strategy", help="strategy name or module:Class")
    run.add_argument("--seed", type=int)
    run.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key, e.g. train.lr=1e-3")
    run.add_argument("--tiny", action="store_true", help="at most 2 tasks and a few dozen examples per split")
    run.add_argument("--resume", metavar="RUN_ID", help="continue a killed or failed run from its last finished task")
    run.add_argument("--quiet", action="store_true", help="no progress bars")
    run.set_defaults(func=cmd_run)

    lst = sub.add_parser("list", help="list installed strategies and scenarios (imports no plugin)")
    lst.add_argument("kind", nargs="?", choices=["all", "strategies", "scenarios"])
    lst.set_defaults(func=cmd_list)

    show = sub.add_parser("show", help="config, score matrix and summary of one run")
    show.add_argument("run_id")
    show.set_defaults(func=cmd_show)

    board = sub.add_parser("leaderboard", help="mean ± std over seeds per scenario × strategy × backbone")
    board.add_argument("--scenario")
    board.add_argument("--format", choices=["text", "markdown", "csv", "latex"], default="text")
    board.set_defaults(func=cmd_leaderboard)

    new = sub.add_parser("new-strategy", help="write a strategy plugin skeleton")
    new.add_argument("name", help="plugin name, lower-case with dashes (e.g. my-method)")
    new.add_argument("--dir", default="strategies", help="folder to write into (default: strategies)")
    new.set_defaults(func=cmd_new_strategy)

    for p in (run, show, board):
        p.add_argument("--results", help=f"results root (default: $CL_SUITE_RESULTS or ./{DEFAULT_RESULTS})")
    return parser


def main(argv: list[str] | None = None) -> int:
    from cl_suite.config import ConfigError
    from cl_suite.registry import RegistryError
    from cl_suite.runner import RunError

    args = build_parser().parse_args(argv)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("default")
            return args.func(args)
    except (UsageError, ConfigError, RegistryError, FileExistsError) as e:
        print(f"cl-suite: error: {e}", file=sys.stderr)
        return 2
    except RunError as e:
        print(f"cl-suite: run failed: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("cl-suite: interrupted (continue with --resume RUN_ID)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
