"""The ``cl-suite`` command line: run | list | describe | show | leaderboard | sweep | bench | app | new-strategy | check.

Exit codes: 0 ok; 2 bad input (unknown name or key, bad value, missing file or data, a run folder another process
holds), always before a run folder is made; 1 the run failed after it started (its record says ``failed``), or an
unexpected error. One line on stderr; the traceback only with ``--debug`` (or ``CL_SUITE_DEBUG=1``).
"""

from __future__ import annotations

import argparse
import builtins
import os
import sys
import warnings
from pathlib import Path

DEFAULT_RESULTS = "results"


class UsageError(Exception):
    """Bad input: printed as one line, exit code 2."""


def _results_root(args) -> Path:
    return Path(args.results or os.environ.get("CL_SUITE_RESULTS") or DEFAULT_RESULTS)


def _readable_root(args) -> Path:
    """The results root for a command that only reads it: a file in its place is bad input."""
    root = _results_root(args)
    if root.exists() and not root.is_dir():
        raise UsageError(f"the results root {root} is a file, not a folder; pass --results DIR")
    return root


def _explicit_root(args) -> bool:
    return bool(getattr(args, "results", None) or os.environ.get("CL_SUITE_RESULTS"))


def _run_dir(root: Path, run_id: str, explicit_root: bool = True) -> Path:
    """A run folder by id (under runs/ or anywhere below the root) or by path. The folder, symlinks resolved, must
    lie inside the results root (for a path and no --results: the root the path names, ``<root>/runs/<id>``), so
    a link in a results folder cannot make ``show`` or ``--resume`` read or write elsewhere."""
    from cl_suite.results import RUN_FILE, inside

    direct = Path(run_id)
    if os.sep in run_id or (os.altsep and os.altsep in run_id) or run_id in (".", "..") or (direct / RUN_FILE).exists():
        if not (direct / RUN_FILE).is_file():
            raise UsageError(f"no run folder at {run_id} (it holds no {RUN_FILE})")
        absolute = Path(os.path.abspath(direct))
        home = root if explicit_root else absolute.parent.parent if absolute.parent.name == "runs" else absolute.parent
        if not inside(direct / RUN_FILE, home):
            raise UsageError(f"run folder {run_id} resolves to {(direct / RUN_FILE).resolve().parent}, outside the "
                             f"results root {home}; refused (pass --results with the root that holds it)")  # fmt: skip
        return direct
    if not run_id.strip():
        raise UsageError("give a run id (see `cl-suite leaderboard`) or the path of a run folder")
    found = [root / "runs" / run_id] if (root / "runs" / run_id / RUN_FILE).exists() else []
    found += [p.parent for p in sorted(root.rglob(RUN_FILE)) if p.parent.name == run_id] if root.is_dir() else []
    for candidate in found:
        if not inside(candidate / RUN_FILE, root):
            raise UsageError(f"run {run_id!r} under {root} links to {(candidate / RUN_FILE).resolve().parent}, "
                             "outside the results root; refused")  # fmt: skip
        return candidate
    raise UsageError(f"no run {run_id!r} under {root} (see `cl-suite leaderboard --results {root}`)")


# -- commands --------------------------------------------------------------------------------------------------
def cmd_run(args) -> int:
    from cl_suite import config, runner

    root = _results_root(args)
    if args.resume:
        if args.config or args.scenario or args.strategy or args.seed is not None or args.set or args.tiny:
            raise UsageError("--resume continues a run with its recorded config; give no config, --scenario, "
                             "--strategy, --seed, --set or --tiny with it")  # fmt: skip
        store = runner.resume(_run_dir(root, args.resume, _explicit_root(args)), progress=not args.quiet,
                              allow_config_refs=args.allow_config_refs)  # fmt: skip
    else:
        raw = config.load_yaml(args.config) if args.config else {}
        overrides = {}  # layering (README, Configs): the YAML file < CLI flags < --set
        for key in ("scenario", "strategy"):
            if getattr(args, key):
                overrides[f"{key}.name"] = getattr(args, key)
        if args.seed is not None:
            overrides["seed"] = str(args.seed)
        if args.tiny:
            overrides["tiny"] = "true"
        overrides.update(config.parse_overrides(args.set or []))
        cfg = config.resolve(raw, overrides, file_refs=args.allow_config_refs)
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
    _print_run(_run_dir(_readable_root(args), args.run_id, _explicit_root(args)), full=True)
    return 0


def cmd_leaderboard(args) -> int:
    from cl_suite import leaderboard, results

    tables = results.load_runs(_readable_root(args))
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


def cmd_bench_generate(args) -> int:
    from cl_suite.models import bench_generate

    return _print_bench(bench_generate, args, backbone=args.backbone, batch_size=args.batch_size,
                        examples=args.examples)  # fmt: skip


def cmd_bench_decode(args) -> int:
    from cl_suite.adapters import bench_decode

    return _print_bench(bench_decode, args, model=args.model, new_tokens=args.new_tokens,
                        prompt_tokens=args.prompt_tokens, batch=args.batch)  # fmt: skip


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
    """Serve the app until Ctrl+C or SIGTERM; the Streamlit server is a child that dies with this process, even on
    SIGKILL (Linux: PR_SET_PDEATHSIG), so it never stays behind holding the port."""
    import signal
    import subprocess

    from cl_suite.locks import die_with_parent

    root = _readable_root(args)
    command, env = app_command(root, args.port, Path(args.published) if args.published else None)
    print(f"cl-suite app: published runs {env['CL_SUITE_PUBLISHED']}, your runs {root.resolve()}; "
          f"open http://127.0.0.1:{args.port} (Ctrl+C stops it)")  # fmt: skip
    parent = os.getpid()
    server = subprocess.Popen(command, env=env, preexec_fn=lambda: die_with_parent(parent, signal.SIGTERM))

    def stop(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        return server.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        signal.signal(signal.SIGTERM, previous)
        if server.poll() is None:
            server.terminate()
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()


def cmd_pretrain(args) -> int:
    from cl_suite.models import tiny_clip
    from cl_suite.models.tiny_clip_pretrain import PretrainConfig, pretrain

    cfg = PretrainConfig(**{k: v for k, v in (("steps", args.steps), ("seed", args.seed)) if v is not None})
    result = pretrain(cfg, Path(args.out) if args.out else tiny_clip.WEIGHTS, progress=not args.quiet)
    print(f"wrote {result['path']} (sha256 {result['sha256']}) in {result['seconds']} s")
    print(f"held-out shape-colour pairs, zero-shot: pair {result['pair_acc']:.1f}% (chance {result['chance_pair']:.1f}%), "
          f"shape {result['shape_acc']:.1f}%, colour {result['colour_acc']:.1f}%")  # fmt: skip
    return 0


def cmd_check(args) -> int:
    """Conformance checks of strategy plugins (or of a scenario plugin): one line per check, exit 1 if any fails."""
    import tempfile
    import time

    from cl_suite import registry, testing

    if not args.strategies and not args.scenario_plugin:
        raise UsageError("name a strategy (registered name or module:Class), or a scenario with --scenario-plugin")
    if args.scenario_plugin and (args.scenario or args.all_scenarios):
        raise UsageError("--scenario-plugin checks that one scenario; drop --scenario/--all-scenarios")
    scenarios = (registry.names("scenario") if args.all_scenarios else args.scenario) or testing.tiny_scenarios()
    for name in scenarios:
        registry.resolve_ref("scenario", name)  # an unknown name is bad input, before anything runs
    for name in [*args.strategies, *filter(None, [args.scenario_plugin])]:
        registry.resolve_ref("scenario" if name == args.scenario_plugin else "strategy", name)
    if args.keep and Path(args.keep).exists() and any(Path(args.keep).iterdir()):
        raise UsageError(f"--keep {args.keep}: the folder is not empty; name a new one")
    overrides = {"device": args.device}
    t0 = time.perf_counter()
    found = []
    with tempfile.TemporaryDirectory(prefix="cl-suite-check-") as tmp:
        root = Path(args.keep) if args.keep else Path(tmp)
        if args.scenario_plugin:
            runs = [testing.check_scenario(args.scenario_plugin, root, args.strategies or None, seed=args.seed,
                                           overrides=overrides)]  # fmt: skip
        else:
            runs = [testing.check_strategy(name, root / testing.slug(name), scenarios, seed=args.seed,
                                           overrides=overrides) for name in args.strategies]  # fmt: skip
        for results in runs:
            for result in results:
                print(result.line(), flush=True)
                found.append(result)
    counts = testing.summarize(found)
    print(f"{counts['pass']} passed, {counts['fail']} failed, {counts['skip']} skipped in "
          f"{time.perf_counter() - t0:.1f} s" + (f"; runs kept under {args.keep}" if args.keep else ""))  # fmt: skip
    return 1 if counts["fail"] else 0


def cmd_new_strategy(args) -> int:
    from cl_suite.scaffold import write_checks, write_strategy

    try:
        path, cls = write_strategy(args.name, Path(args.dir))
    except (ValueError, FileExistsError) as e:
        raise UsageError(str(e)) from e
    module = path.stem
    ref = f"{path.parent.name}.{module}:{cls}"
    print(f"wrote {path}")
    for extra, fresh in write_checks(args.name, ref, path.parent.parent):
        print(f"wrote {extra}" if fresh else f"kept  {extra} (it exists; add {ref} to it)")
    print(f"try it:   cl-suite run --tiny --scenario digits-tiny --strategy {ref}")
    print(f"check it: cl-suite check {ref}")
    print(f'register: add `{args.name} = "{path.parent.name}.{module}:{cls}"` under '
          '[project.entry-points."cl_suite.strategies"] in pyproject.toml, then `pip install -e .`')  # fmt: skip
    return 0


# -- output ----------------------------------------------------------------------------------------------------
def _print_run(path: Path, full: bool = False) -> None:
    import pandas as pd
    import yaml

    from cl_suite import metrics, results
    from cl_suite.safe_text import terminal

    def print(text="", **kwargs):  # everything below comes from a run folder: no control character reaches the terminal
        builtins.print(terminal(text), **kwargs)

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
            known = metrics.SUMMARIES.get(name)
            arrow = "?" if known is None or direction not in ("max", "min") else (
                "↑" if metrics.direction(name, direction) == "max" else "↓")  # fmt: skip
            shown = "-" if value is None else f"{value:.2f}" if isinstance(value, (int, float)) else str(value)
            print(f"  {name:<24}{shown:>8} {arrow}  {known.label if known else '(not a cl-suite summary)'}")
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
    parser.add_argument("--debug", action="store_true", help="print the traceback of an error")
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
    run.add_argument("--allow-config-refs", action="store_true",
                     help="import a module:Class named in the config file or run folder even if no installed plugin "
                          "names it (it runs that module's code: only for configs you trust)")  # fmt: skip
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

    from cl_suite.testing import CHECKS, SCENARIO_PLUGIN_STRATEGIES

    chk = sub.add_parser("check", help="conformance checks of strategy plugins on tiny scenarios (for a plugin's CI)",
                         formatter_class=argparse.RawDescriptionHelpFormatter, description="checks:\n" + "\n".join(
                             f"  {name:<11} {text}" for name, text in CHECKS.items()))  # fmt: skip
    chk.add_argument("strategies", nargs="*", metavar="STRATEGY", help="registered name or module:Class")
    where = chk.add_mutually_exclusive_group()
    where.add_argument("--scenario", action="append", metavar="NAME",
                       help="check on this scenario (repeatable; default: every compatible *-tiny scenario)")  # fmt: skip
    where.add_argument("--all-scenarios", action="store_true",
                       help="every registered scenario (under --tiny; those without data on disk are skipped)")  # fmt: skip
    chk.add_argument("--scenario-plugin", metavar="NAME", help="check a scenario plugin with the built-in strategies "
                     f"{', '.join(SCENARIO_PLUGIN_STRATEGIES)} (or the STRATEGY names given)")  # fmt: skip
    chk.add_argument("--seed", type=int, default=0, help="seed of the runs (default: 0)")
    chk.add_argument("--device", default="cpu", help="device of the runs (default: cpu, where reruns are bit-identical)")
    chk.add_argument("--keep", metavar="DIR", help="keep the runs under DIR (default: a temporary folder)")
    chk.set_defaults(func=cmd_check)

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

    bench = sub.add_parser("bench", help="micro-benchmarks (kernels, mora, generate: the LLM evaluation path)")
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
    bg = bench_sub.add_parser("generate", help="examples/s of the LLM evaluation path vs plain model.generate loops")
    bg.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    bg.add_argument("--backbone", default="smollm2-135m", help="smollm2-135m (default), tiny-llama or hf:<name>")
    bg.add_argument("--batch-size", type=int, default=16, help="evaluation batch size (default: 16)")
    bg.add_argument("--examples", type=int, default=48, help="llm-tiny test prompts to generate for (default: 48)")
    bg.add_argument("--reps", type=int, default=1, help="timed runs per variant; the minimum is reported (default: 1)")
    bg.add_argument("--csv", metavar="PATH", help="also save the table as CSV")
    bg.set_defaults(func=cmd_bench_generate)
    bd = bench_sub.add_parser("decode", help="greedy decoding per token: base, LoRA, MoRA, lora-switch, smora, milora")
    bd.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    bd.add_argument("--model", default="smollm2-135m",
                    help="causal LM: smollm2-135m (default), hf:<name or folder>, or tiny (a random 2-layer Llama)")
    bd.add_argument("--new-tokens", type=int, default=32, help="tokens decoded after the prompt (default: 32)")
    bd.add_argument("--prompt-tokens", type=int, default=16, help="prompt length, prefilled untimed (default: 16)")
    bd.add_argument("--batch", type=int, default=1, help="sequences decoded together (default: 1, the target's)")
    bd.add_argument("--reps", type=int, default=3, help="interleaved rounds; the minimum is reported (default: 3)")
    bd.add_argument("--csv", metavar="PATH", help="also save the table as CSV")
    bd.set_defaults(func=cmd_bench_decode)

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
    for p in sub.choices.values():  # --debug also after the command name
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    for p in bench_sub.choices.values():
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> int:
    """One exit-code rule for every command (see the module docstring)."""
    import traceback

    from cl_suite.api import MissingData
    from cl_suite.config import ConfigError
    from cl_suite.locks import Busy
    from cl_suite.registry import RegistryError
    from cl_suite.results import RecordError, StorageError
    from cl_suite.runner import RunError
    from cl_suite.safe_text import one_line

    args = build_parser().parse_args(argv)
    debug = getattr(args, "debug", False) or os.environ.get("CL_SUITE_DEBUG", "") not in ("", "0")

    def say(prefix: str, error: BaseException) -> None:
        if debug:
            traceback.print_exc()
        print(f"cl-suite: {prefix}{one_line(error)}", file=sys.stderr)

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("default")
            return args.func(args)
    except BrokenPipeError:  # output piped into `head` and the like
        sys.stderr.close()
        return 0
    except (UsageError, ConfigError, RegistryError, MissingData, FileExistsError, RecordError, StorageError,
            Busy) as e:  # fmt: skip
        say("error: ", e)
        return 2
    except RunError as e:
        say("run failed: ", e)
        return 1
    except KeyboardInterrupt:
        print("cl-suite: interrupted (continue with --resume RUN_ID)", file=sys.stderr)
        return 130
    except OSError as e:  # a file that cannot be read or written before anything ran
        say("error: ", e)
        return 2
    except Exception as e:
        say(f"unexpected error: {type(e).__name__}: ", e)
        if not debug:
            print("cl-suite: run again with --debug for the traceback", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
