"""The ``cl-suite`` command line: run | list | describe | show | leaderboard | sweep | bench | app | new-strategy.

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

    kinds = {"strategies": ["strategy"], "scenarios": ["scenario"]}.get(args.kind, ["strategy", "scenario"])
    for kind in kinds:
        print(f"{kind.capitalize()} plugins:")
        for name in registry.names(kind):
            info = registry.describe(kind, name)
            label = "settings" if kind == "strategy" else "setting"
            print(f"  {name:<24} {info.description}  [{label}: {', '.join(info.settings)}]")
        print()
    return 0


def cmd_describe(args) -> int:
    from cl_suite import config, protocol_card

    try:
        card = protocol_card.build(args.scenario, config.parse_overrides(args.set or []), tiny=args.tiny)
    except protocol_card.CardError as e:
        raise UsageError(str(e)) from e
    print(protocol_card.to_json(card) if args.format == "json" else protocol_card.to_text(card))
    return 0


def cmd_show(args) -> int:
    _print_run(_run_dir(_results_root(args), args.run_id), full=True)
    return 0


def cmd_leaderboard(args) -> int:
    from cl_suite import leaderboard, results

    tables = results.load_runs(_results_root(args))
    board = leaderboard.leaderboard(tables, scenario=args.scenario)
    if not args.per_scenario:
        print(leaderboard.render(board, args.format))
        return 0
    for name, rows in board.groupby("scenario", sort=True):
        print(f"#### {name}\n\n{leaderboard.render(rows.dropna(axis=1, how='all'), args.format)}\n")
    return 0


def cmd_published(args) -> int:
    from cl_suite import published, sweep

    root = Path(args.results or "results/published")
    scenarios = sweep.parse_names(args.scenarios, "scenarios") if args.scenarios else None
    strategies = sweep.parse_names(args.strategies, "strategies") if args.strategies else None
    return published.run_published(root, scenarios=scenarios, strategies=strategies, jobs=args.jobs)


def cmd_sweep(args) -> int:
    from cl_suite import sweep

    return sweep.run_sweep(
        scenarios=args.scenarios, strategies=args.strategies, seeds=args.seeds, root=_results_root(args),
        overrides=args.set, config_file=args.config, tiny=args.tiny, backend=args.backend, address=args.address,
        jobs=args.jobs, cpus_per_run=args.cpus_per_run, gpus_per_run=args.gpus_per_run, retries=args.retries,
        transfer=args.transfer, fmt=args.format,
    )  # fmt: skip


def _print_bench(module, args, **kwargs) -> int:
    """Run ``module.run_bench`` (bad device or shapes become usage errors), print its table, say where the CSV went."""
    try:
        rows = module.run_bench(args.device, csv_path=args.csv, reps=args.reps,
                                progress=lambda line: print(line, file=sys.stderr), **kwargs)  # fmt: skip
    except (ValueError, RuntimeError) as e:
        raise UsageError(str(e)) from e
    print(module.render(rows, args.device))
    if args.csv:
        print(f"saved {args.csv}")
    return 0


def cmd_bench_kernels(args) -> int:
    from cl_suite.kernels import bench

    return _print_bench(bench, args, full=args.full)


def cmd_bench_mora(args) -> int:
    from cl_suite.adapters import bench_mora

    try:
        tasks = tuple(int(t) for t in args.tasks.split(","))
    except ValueError as e:
        raise UsageError(f"--tasks must be comma-separated integers such as 1,5,10, got {args.tasks!r}") from e
    return _print_bench(bench_mora, args, d=args.d, tokens=args.tokens, rank=args.rank, topk=args.topk, tasks=tasks)


def app_command(root: Path, port: int, published: Path | None = None) -> tuple[list[str], dict[str, str]]:
    """The Streamlit command line and environment of `cl-suite app` (headless, localhost only): the user's results
    root, and the published runs (default: this checkout's results/published) shown first and apart."""
    import importlib.util

    entry = Path(__file__).resolve().parent.parent / "app" / "main.py"
    if importlib.util.find_spec("streamlit") is None:
        raise UsageError("the app needs Streamlit: pip install -e '.[app]'")
    if not entry.exists():
        raise UsageError(f"the app's entry page {entry} is missing; run `cl-suite app` from a checkout of cl-suite")
    if not 0 < port < 65536:
        raise UsageError(f"--port must be in 1..65535, got {port}")
    command = [sys.executable, "-m", "streamlit", "run", str(entry), "--server.headless", "true",
               "--server.address", "127.0.0.1", "--server.port", str(port), "--browser.gatherUsageStats", "false"]  # fmt: skip
    pythonpath = os.pathsep.join(filter(None, [str(entry.parent.parent), os.environ.get("PYTHONPATH")]))
    published = published or entry.parent.parent / "results" / "published"
    return command, {**os.environ, "CL_SUITE_RESULTS": str(root.resolve()), "CL_SUITE_PUBLISHED": str(published.resolve()),
                     "PYTHONPATH": pythonpath}  # fmt: skip


def cmd_app(args) -> int:
    import subprocess

    root = _results_root(args)
    command, env = app_command(root, args.port, Path(args.published) if args.published else None)
    print(f"cl-suite app: published runs {env['CL_SUITE_PUBLISHED']}, your runs {root.resolve()}; open http://127.0.0.1:{args.port} (Ctrl+C stops it)")
    try:
        return subprocess.call(command, env=env)
    except KeyboardInterrupt:
        return 0


def cmd_pretrain(args) -> int:
    from cl_suite.models import tiny_clip
    from cl_suite.models.tiny_clip_pretrain import PretrainConfig, pretrain

    cfg = PretrainConfig(**{k: v for k, v in (("steps", args.steps), ("seed", args.seed)) if v is not None})
    result = pretrain(cfg, Path(args.out) if args.out else tiny_clip.WEIGHTS, progress=not args.quiet)
    print(f"wrote {result['path']} (sha256 {result['sha256']}) in {result['seconds']} s")
    print(f"held-out shape-colour pairs, zero-shot: pair {result['pair_acc']:.1f}% (chance {result['chance_pair']:.1f}%), "
          f"shape {result['shape_acc']:.1f}%, colour {result['colour_acc']:.1f}%")  # fmt: skip
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
        R, counts = results.score_matrix(evals_df, record["metric"], len(names))
        matrix = pd.DataFrame(R, index=["before", *[f"after {n}" for n in names]], columns=names)
        print(f"\nscore matrix ({record['metric']}, rows: after training task, columns: evaluated task):")
        print(matrix.round(2).to_string())
        if record.get("setting") == "fscil":
            sessions = metrics.fscil_sessions(R, counts)
            print("\nper-session accuracy (test set of all classes seen so far):")
            print("  " + "  ".join(f"{n}={a:.2f}" for n, a in zip(names, sessions) if a == a))  # a == a: not NaN
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

    desc = sub.add_parser("describe", help="the protocol card of a scenario: tasks, classes, templates, recipe, sources")
    desc.add_argument("scenario", help="scenario name or module:Class (see `cl-suite list scenarios`)")
    desc.add_argument("--format", choices=["text", "json"], default="text")
    desc.add_argument("--set", action="append", metavar="KEY=VALUE", help="a scenario.* or train.* key, e.g. scenario.order=II")
    desc.add_argument("--tiny", action="store_true", help="describe the --tiny version of the scenario")
    desc.set_defaults(func=cmd_describe)

    show = sub.add_parser("show", help="config, score matrix and summary of one run")
    show.add_argument("run_id")
    show.set_defaults(func=cmd_show)

    board = sub.add_parser("leaderboard", help="mean ± std over seeds per scenario × strategy × backbone")
    board.add_argument("--scenario")
    board.add_argument("--format", choices=["text", "markdown", "csv", "latex"], default="text")
    board.add_argument("--per-scenario", action="store_true",
                       help="one table per scenario under a heading (`make readme-tables` prints the README's)")
    board.set_defaults(func=cmd_leaderboard)

    pub = sub.add_parser("published", help="run the published tier (every strategy x every tiny scenario) into "
                                           "results/published; finished cells are skipped")
    pub.add_argument("--scenarios", help="only these tier scenarios (comma-separated; default: the whole tier)")
    pub.add_argument("--strategies", help="only these strategies (default: every registered one)")
    pub.add_argument("--jobs", type=int, help="cells at a time (default: one per CPU)")
    pub.add_argument("--results", help="where the published runs go (default: ./results/published)")
    pub.set_defaults(func=cmd_published)

    new = sub.add_parser("new-strategy", help="write a strategy plugin skeleton")
    new.add_argument("name", help="plugin name, lower-case with dashes (e.g. my-method)")
    new.add_argument("--dir", default="strategies", help="folder to write into (default: strategies)")
    new.set_defaults(func=cmd_new_strategy)

    swp = sub.add_parser("sweep", help="run a scenario × strategy × seed grid (skips finished cells, resumes killed ones)")
    swp.add_argument("--scenarios", required=True, help="comma-separated scenario names")
    swp.add_argument("--strategies", required=True, help="comma-separated strategy names")
    swp.add_argument("--seeds", default="0", help="comma-separated seeds or ranges, e.g. 0,1,2 or 0-4 (default: 0)")
    swp.add_argument("--config", help="a base run config YAML shared by every cell")
    swp.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key in every cell")
    swp.add_argument("--tiny", action="store_true", help="shrink every cell (at most 2 tasks, a few dozen examples)")
    swp.add_argument("--backend", choices=["local", "ray"], default="local",
                     help="local: a process pool on this machine; ray: Ray tasks on a local or remote cluster")  # fmt: skip
    swp.add_argument("--address", help="Ray cluster address (e.g. auto, host:6379, ray://host:10001); "
                                       "default: $RAY_ADDRESS, a cluster started here, else a local Ray")  # fmt: skip
    swp.add_argument("--jobs", type=int, help="cells at a time (default: local, CPUs / cpus-per-run; ray, what fits)")
    swp.add_argument("--cpus-per-run", type=float,
                     help="CPUs (and torch threads) per cell (default: ray 1; local, the CPUs shared out over --jobs)")  # fmt: skip
    swp.add_argument("--gpus-per-run", type=float, default=0.0, help="GPUs per cell; a fraction packs cells per GPU")
    swp.add_argument("--retries", type=int, default=1, help="retry a failed cell this many times (default: 1)")
    swp.add_argument("--transfer", choices=["shared", "return"],
                     help="shared: workers write into the results root (one machine, or a shared filesystem at the "
                          "same path); return: workers send each run folder back to this process (default for ray)")  # fmt: skip
    swp.add_argument("--format", choices=["text", "markdown", "csv", "latex"], default="text")
    swp.set_defaults(func=cmd_sweep)

    bench = sub.add_parser("bench", help="micro-benchmarks (kernels: the fused adapter op)")
    bench_sub = bench.add_subparsers(dest="bench", required=True)
    bk = bench_sub.add_parser("kernels", help="adapter op vs frozen linear vs per-group loop (and Triton on CUDA)")
    bk.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    bk.add_argument("--csv", metavar="PATH", help="also save the table as CSV")
    bk.add_argument("--full", action="store_true", help="on a CPU, include N=8192 (slow)")
    bk.add_argument("--reps", type=int, default=5, help="CPU repeats per variant; the minimum is reported (default: 5)")
    bk.set_defaults(func=cmd_bench_kernels)
    bm = bench_sub.add_parser("mora", help="a MoRA layer (atom bank, top-k self-activation) vs the frozen linear")
    bm.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    bm.add_argument("--d", type=int, default=768, help="layer width (default: 768, CLIP ViT-B/16)")
    bm.add_argument("--tokens", type=int, help="tokens per call (default: 512 on a CPU, 197x64 on CUDA)")
    bm.add_argument("--rank", type=int, default=16, help="atoms per task r (default: 16)")
    bm.add_argument("--topk", type=int, default=16, help="activation budget k (default: 16)")
    bm.add_argument("--tasks", default="1,5,10", help="bank sizes in tasks, comma-separated (default: 1,5,10)")
    bm.add_argument("--reps", type=int, default=5, help="CPU repeats per variant; the minimum is reported (default: 5)")
    bm.add_argument("--csv", metavar="PATH", help="also save the table as CSV")
    bm.set_defaults(func=cmd_bench_mora)

    app = sub.add_parser("app", help="the Streamlit leaderboard on http://127.0.0.1:PORT over one results root")
    app.add_argument("--port", type=int, default=8501, help="local port (default: 8501)")
    app.add_argument("--results", help=f"your results root (default: $CL_SUITE_RESULTS or ./{DEFAULT_RESULTS})")
    app.add_argument("--published", help="the published runs shown first (default: results/published of this checkout)")
    app.set_defaults(func=cmd_app)

    pre = sub.add_parser("pretrain", help="pretrain a project model (tiny-clip: the clip-tiny backbone, minutes on a CPU)")
    pre.add_argument("model", choices=["tiny-clip"])
    pre.add_argument("--steps", type=int, help="optimizer steps (default: the committed weights' 900)")
    pre.add_argument("--seed", type=int, help="seed (default 0)")
    pre.add_argument("--out", help="weights file (default: the packaged cl_suite/models/weights/tiny_clip.pt)")
    pre.add_argument("--quiet", action="store_true", help="no progress bar")
    pre.set_defaults(func=cmd_pretrain)

    for p in (run, show, board, swp):
        p.add_argument("--results", help=f"results root (default: $CL_SUITE_RESULTS or ./{DEFAULT_RESULTS})")
    return parser


def main(argv: list[str] | None = None) -> int:
    from cl_suite.api import MissingData
    from cl_suite.config import ConfigError
    from cl_suite.registry import RegistryError
    from cl_suite.runner import RunError

    args = build_parser().parse_args(argv)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("default")
            return args.func(args)
    except (UsageError, ConfigError, RegistryError, MissingData, FileExistsError) as e:
        print(f"cl-suite: error: {e}", file=sys.stderr)
        return 2
    except RunError as e:
        print(f"cl-suite: run failed: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("cl-suite: interrupted (continue with --resume RUN_ID)", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` and the like
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
