"""Conformance checks for strategy and scenario plugins, importable by any test suite.

One implementation behind three doors: ``cl-suite check`` (a plugin author's CI), :func:`conformance_tests` (one line
in a plugin package's pytest suite) and this repository's ``tests/test_conformance.py``.

Each strategy runs on every compatible ``*-tiny`` scenario under ``--tiny`` with a few training steps on the CPU, and
is checked for: the run finishes; its record is complete and valid; ``strategy_stats`` is a JSON-serialisable dict;
a copy resumed from the first task's checkpoint ends with identical evaluations and losses; a second run with the
same seed is identical; and its ``supports``/``requires`` are honest (known names, what ``cl-suite list`` reads,
refused where they exclude a scenario, a finished run where they admit one). Plugins are loaded only through
:mod:`cl_suite.registry` (a registered name or ``module:Class``).
"""

from __future__ import annotations

import io
import json
import re
import shutil
import time
import traceback
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CHECKS = {
    "loads": "the plugin imports through cl_suite.registry and subclasses the right base class",
    "finishes": "a --tiny run (3 steps per task, on the CPU by default) finishes with status success",
    "record": "the run record is complete and valid: score matrix, summary, cost, one stats entry per task, leaderboard",
    "stats-json": "strategy_stats() returns a JSON-serialisable dict after every task",
    "resume": "a copy resumed from the first task's checkpoint ends with identical evaluations and losses",
    "seed": "a second run with the same seed gives identical evaluations and losses",
    "supports": "supports/requires: known names, what `cl-suite list` reads, refused where they exclude a scenario, "
    "a finished run where they admit one",
    "declares": "setting/provides/metrics/summary: known names, what `cl-suite list` reads; incompatible strategies refused",
}
"""Check name -> what it verifies (the names ``cl-suite check`` prints)."""

RUN_OVERRIDES = {"train.max_steps": "3", "train.keep_checkpoints": "all", "device": "cpu"}
"""Overrides of every conformance run: a few steps per task, every checkpoint kept (for the resume check), the CPU
(bit-identical reruns)."""

SCENARIO_PLUGIN_STRATEGIES = ("zero-shot", "finetune", "joint", "lora")
"""Built-in strategies a scenario plugin is checked with by default: no training, full training, replay of all data
and an adapter (the ones the scenario's setting and capabilities admit)."""

STOPPED_BY_STATS = "the run stopped at strategy_stats (see stats-json)"


@dataclass(frozen=True)
class CheckResult:
    """One printed line: a check on a subject ("mora on digits-tiny", or a plugin alone), and its outcome."""

    check: str
    subject: str
    status: str  # "pass" | "fail" | "skip"
    reason: str = ""

    @property
    def failed(self) -> bool:
        return self.status == "fail"

    def line(self) -> str:
        text = f"{self.status.upper():<4}  {self.check:<10}  {self.subject}"
        return f"{text}: {self.reason}" if self.reason else text


# -- scenario selection ----------------------------------------------------------------------------------------
def tiny_scenarios() -> list[str]:
    """The registered ``*-tiny`` scenarios: generated data, seconds each on a CPU."""
    from cl_suite import registry

    return [name for name in registry.names("scenario") if name.endswith("-tiny")]


def compatible(scenario: str, strategy: str) -> bool:
    from cl_suite import registry
    from cl_suite.api import incompatibility

    return incompatibility(registry.load("scenario", scenario), registry.load("strategy", strategy)) is None


def _loadable(kind: str, names: Iterable[str]) -> tuple[list[str], dict[str, str]]:
    """The names whose plugin imports, and why each other one does not (an optional extra not installed)."""
    from cl_suite import registry

    ok, broken = [], {}
    for name in names:
        try:
            registry.load(kind, name)
            ok.append(name)
        except registry.RegistryError:
            raise
        except Exception as e:
            broken[name] = _failure(e)
    return ok, broken


# -- the run-level checks --------------------------------------------------------------------------------------
def run_config(scenario: str, strategy: str, seed: int = 0, overrides: dict[str, str] | None = None):
    from cl_suite import config

    return config.resolve({"scenario": scenario, "strategy": strategy, "tiny": True, "seed": seed},
                          {**RUN_OVERRIDES, **(overrides or {})})  # fmt: skip


def check_pair(scenario: str, strategy: str, root: str | Path, *, seed: int = 0, seed_check: bool = True,
               overrides: dict[str, str] | None = None) -> list[CheckResult]:  # fmt: skip
    """The run-level checks of ``strategy`` on ``scenario``, with run folders under ``root``.

    A scenario whose data is not on disk (a full-size one, not a ``*-tiny`` one) gives one ``skip`` line; a failed
    run fails ``finishes`` (and ``stats-json`` when the stats were the cause) and skips the checks that need a
    finished run.
    """
    from cl_suite import runner
    from cl_suite.api import MissingData

    subject = f"{strategy} on {scenario}"
    folder = Path(root) / slug(f"{scenario}--{strategy}")
    cfg = run_config(scenario, strategy, seed, overrides)
    later = ("record", "stats-json", "resume", "seed") if seed_check else ("record", "stats-json", "resume")

    def skipped(checks: Iterable[str], why: str) -> list[CheckResult]:
        return [CheckResult(c, subject, "skip", why) for c in checks]

    try:
        first = runner.start(cfg, folder / "first", out=io.StringIO(), progress=False).path
    except MissingData as e:
        return skipped(("finishes",), f"data not on disk ({e})")
    except runner.StrategyStatsError as e:
        return [CheckResult("finishes", subject, "fail", STOPPED_BY_STATS), CheckResult("stats-json", subject, "fail", str(e)),
                *skipped([c for c in later if c != "stats-json"], "the run failed")]  # fmt: skip
    except Exception as e:
        if _needs_data(e) and not scenario.endswith("-tiny"):
            return skipped(("finishes",), f"needs data or config the check does not give: {_failure(e)}")
        return [CheckResult("finishes", subject, "fail", _failure(e)), *skipped(later, "the run failed")]
    results = [CheckResult("finishes", subject, "pass"), _outcome("record", subject, _record_problems(first)),
               _outcome("stats-json", subject, _stats_problems(first))]  # fmt: skip
    results.append(_resume_check(first, subject))
    if seed_check:
        results.append(check_seed(scenario, strategy, root, seed=seed, overrides=overrides))
    return results


def _record_problems(folder: Path) -> list[str]:
    import numpy as np

    from cl_suite import registry, results

    record, _ = results.load_run(folder)
    R = score_matrix(folder)
    T = record.get("num_tasks") or 0
    scenario_cls = registry.load("scenario", record["scenario"])
    cost = record.get("cost") or {}
    stats = record.get("strategy_stats") or []
    checks = [
        (record["status"] == "success", f"status is {record['status']!r}"),
        (1 <= T <= 2, f"--tiny gave {T} tasks (expected 1 or 2)"),
        (R.shape == (T + 1, T) and bool(np.isfinite(R).all()),
         f"the score matrix ({record.get('metric')}) has missing or non-finite entries:\n{R}"),
        (set(record.get("summary") or {}) == set(scenario_cls.summary),
         f"summary has {sorted(record.get('summary') or {})}, the scenario declares {sorted(scenario_cls.summary)}"),
        ({"wall_s", "trainable_params", "added_inference_params", "total_params"} <= set(cost),
         f"cost lacks {sorted({'wall_s', 'trainable_params', 'added_inference_params', 'total_params'} - set(cost))}"),
        ([s.get("task") for s in stats] == list(range(T)), f"strategy_stats holds tasks {[s.get('task') for s in stats]}"),
        (results.load_runs(folder.parent.parent).runs["run_id"].tolist() == [folder.name],
         "the leaderboard's loader does not read the run back"),
    ]  # fmt: skip
    return [message for ok, message in checks if not ok]


def _stats_problems(folder: Path) -> list[str]:
    from cl_suite import results

    record, _ = results.load_run(folder)
    stats = record.get("strategy_stats")
    if not isinstance(stats, list) or not all(isinstance(s, dict) for s in stats):
        return [f"run.json's strategy_stats is {type(stats).__name__}, not a list of dicts"]
    try:
        json.dumps(stats, allow_nan=False)
    except (TypeError, ValueError) as e:
        return [f"strategy_stats is not strict JSON: {e}"]
    return []


def _resume_check(first: Path, subject: str) -> CheckResult:
    from cl_suite import results

    record, _ = results.load_run(first)
    if record["num_tasks"] < 2:
        return CheckResult("resume", subject, "skip", "the --tiny scenario has one task: nothing to resume")
    try:
        copy = resume_from_first_checkpoint(first)
    except Exception as e:
        return CheckResult("resume", subject, "fail", "resuming from the first checkpoint failed: " + _failure(e))
    return _outcome("resume", subject, _differences(first, copy, "uninterrupted", "resumed"))


def check_seed(scenario: str, strategy: str, root: str | Path, *, seed: int = 0,
               overrides: dict[str, str] | None = None) -> CheckResult:  # fmt: skip
    """The ``seed`` check: a second run of a pair :func:`check_pair` ran under ``root`` must equal the first."""
    from cl_suite import runner

    subject = f"{strategy} on {scenario}"
    folder = Path(root) / slug(f"{scenario}--{strategy}")
    first = next(p for p in (folder / "first" / "runs").iterdir() if p.name != "resumed")
    cfg = run_config(scenario, strategy, seed, overrides)
    try:
        second = runner.start(cfg, folder / "second", out=io.StringIO(), progress=False).path
    except Exception as e:
        return CheckResult("seed", subject, "fail", f"a second run with seed {cfg.seed} failed: " + _failure(e))
    return _outcome("seed", subject, _differences(first, second, "first run", f"second run, seed {cfg.seed}"))


def resume_from_first_checkpoint(run_dir: str | Path) -> Path:
    """Copy a finished run (kept with train.keep_checkpoints=all) to ``resumed`` beside it, drop the copy's
    checkpoints after the first task, resume it and return the copy: it must end as the original did."""
    from cl_suite import results, runner

    run_dir = Path(run_dir)
    copy = run_dir.parent / "resumed"
    shutil.copytree(run_dir, copy)
    for checkpoint in sorted((copy / "checkpoints").glob("task-*.pt"))[1:]:
        checkpoint.unlink()
    results.RunStore(copy).update(status="running", run_id="resumed")
    # The run was just made by this checker from a ref the user typed, so its config's ref is trusted.
    runner.resume(copy, out=io.StringIO(), progress=False, allow_config_refs=True)
    return copy


def eval_rows(run_dir: str | Path) -> list[tuple]:
    """Every evaluation of a run as sorted (after_task, eval_task, metric, value) tuples."""
    from cl_suite import results

    return sorted((e["after_task"], e["eval_task"], e["metric"], e["value"]) for e in results.load_run(run_dir)[1])


def loss_rows(run_dir: str | Path) -> list[tuple]:
    """The runner's logged training losses as sorted (task, step, loss) tuples (strategy logs left out)."""
    from cl_suite.results import TRAIN_FILE, RunStore

    rows = RunStore(run_dir).read_lines(TRAIN_FILE)
    return sorted((r["task"], r["step"], r["loss"]) for r in rows if "kind" not in r and "loss" in r)


def score_matrix(run_dir: str | Path):
    """The primary-metric score matrix R (T+1, T) of a run."""
    import pandas as pd

    from cl_suite import results

    record, evals = results.load_run(run_dir)
    evals_df = pd.DataFrame([{"n": None, **e} for e in evals], columns=results.EVAL_COLUMNS[1:])
    return results.score_matrix(evals_df, record["metric"], record.get("num_tasks") or 0)[0]


def _differences(a: Path, b: Path, name_a: str, name_b: str) -> list[str]:
    from cl_suite import results

    problems = []
    status = results.load_run(b)[0]["status"]
    if status != "success":
        problems.append(f"the {name_b} ended with status {status!r}")
    for what, rows in (("evaluation", eval_rows), ("training loss", loss_rows)):
        left, right = rows(a), rows(b)
        if left != right:
            diff = next(((x, y) for x, y in zip(left, right) if x != y), None)
            detail = (f"{len(left)} rows vs {len(right)}" if diff is None
                      else f"{_row(diff[0])} vs {diff[1][-1]!r}")  # fmt: skip
            problems.append(f"{what}s differ ({name_a} vs {name_b}): {detail}")
    return problems


def _row(row: tuple) -> str:
    if len(row) == 4:
        after, task, metric, value = row
        label = "before training" if after == -1 else f"after task {after + 1}"
        return f"{metric} on task {task + 1} {label}: {value!r}"
    task, step, loss = row
    return f"task {task + 1} step {step} loss {loss!r}"


# -- the plugin-level checks -----------------------------------------------------------------------------------
def check_strategy(strategy: str, root: str | Path, scenarios: Sequence[str] | None = None, *, seed: int = 0,
                   seed_scenarios: int | None = None, overrides: dict[str, str] | None = None,
                   ) -> Iterator[CheckResult]:  # fmt: skip
    """Every check of one strategy (a registered name or ``module:Class``) on ``scenarios`` (default: every
    ``*-tiny`` scenario), yielded as they finish. ``seed_scenarios``: run the seed check on only the N scenarios
    whose other checks were quickest (None: on all); the repository's own test uses 1 to keep ``make test`` short."""
    from cl_suite import registry

    try:
        cls = registry.load("strategy", strategy)
    except registry.RegistryError:
        raise  # an unknown name is bad input, not a failed check
    except Exception as e:
        yield CheckResult("loads", strategy, "fail", _failure(e))
        return
    yield CheckResult("loads", strategy, "pass")
    scenarios, unloadable = _loadable("scenario", tiny_scenarios() if scenarios is None else scenarios)
    for scenario, reason in unloadable.items():
        yield CheckResult("finishes", f"{strategy} on {scenario}", "skip", f"the scenario does not import: {reason}")
    admitted = [s for s in scenarios if compatible(s, strategy)]
    failed_runs: dict[str, str] = {}
    finished: dict[str, float] = {}  # scenario -> seconds its checks took
    ran = 0
    for scenario in admitted:
        t0 = time.perf_counter()
        for result in check_pair(scenario, strategy, root, seed=seed, seed_check=seed_scenarios is None,
                                 overrides=overrides):  # fmt: skip
            if result.check == "finishes" and result.status != "skip":
                ran += 1
                if result.failed and result.reason != STOPPED_BY_STATS:
                    failed_runs[scenario] = result.reason
                elif not result.failed:
                    finished[scenario] = time.perf_counter() - t0
            yield result
    if seed_scenarios is not None:
        for scenario in sorted(finished, key=finished.get)[:seed_scenarios]:
            yield check_seed(scenario, strategy, root, seed=seed, overrides=overrides)
    yield _supports_check(strategy, cls, scenarios, admitted, failed_runs, ran, Path(root) / "refused", seed)


def _supports_check(strategy: str, cls: type, scenarios: list[str], admitted: list[str], failed_runs: dict[str, str],
                    ran: int, root: Path, seed: int) -> CheckResult:  # fmt: skip
    from cl_suite import registry
    from cl_suite.api import CAPABILITIES, SETTINGS

    problems = []
    supports, requires = set(cls.supports), set(cls.requires)
    if not supports or supports - set(SETTINGS):
        problems.append(f"supports {sorted(supports)} must be a non-empty subset of {list(SETTINGS)}")
    if requires - set(CAPABILITIES):
        problems.append(f"requires {sorted(requires - set(CAPABILITIES))}: unknown; known: {list(CAPABILITIES)}")
    listed = registry.describe("strategy", strategy).settings
    if listed != tuple(sorted(supports)):
        problems.append(f"`cl-suite list` reads supports {list(listed)} from the source, the class has "
                        f"{sorted(supports)}: declare it as a literal in the class body (or a base class's)")  # fmt: skip
    problems += _refusal_problems([(s, strategy) for s in scenarios if s not in admitted], root, seed)
    for scenario, reason in failed_runs.items():
        setting = registry.load("scenario", scenario).setting
        needs = f"{scenario} provides the {', '.join(sorted(requires))} it requires" if requires else "it requires nothing"
        problems.append(f"supports claims {setting!r} and {needs}, but the run on {scenario} failed: {reason}")
    if not admitted:
        problems.append(f"no checked scenario admits it ({', '.join(scenarios) or 'none'}): nothing was run")
    elif not ran:
        problems.append("every admitted scenario was skipped: nothing was run")
    unexercised = sorted(supports - {registry.load("scenario", s).setting for s in admitted})
    note = f"settings with no checked scenario: {', '.join(unexercised)}" if unexercised and not problems else ""
    return _outcome("supports", strategy, problems, note)


def _refusal_problems(pairs: list[tuple[str, str]], root: Path, seed: int) -> list[str]:
    """Each (scenario, strategy) pair must be refused with a ConfigError before a run folder exists."""
    from cl_suite import config, runner

    problems = []
    for scenario, strategy in pairs:
        try:
            runner.start(run_config(scenario, strategy, seed), root, out=io.StringIO(), progress=False)
            problems.append(f"{strategy} on {scenario} ran, but supports/requires exclude it")
        except config.ConfigError:
            pass
        except Exception as e:
            problems.append(f"{strategy} on {scenario} was not refused with a clear error: {_failure(e)}")
        if (root / "runs").exists() and any((root / "runs").iterdir()):
            problems.append(f"{strategy} on {scenario}: the refused run left a folder under {root / 'runs'}")
            shutil.rmtree(root / "runs")
    return problems


def check_scenario(scenario: str, root: str | Path, strategies: Sequence[str] | None = None, *, seed: int = 0,
                   overrides: dict[str, str] | None = None) -> Iterator[CheckResult]:  # fmt: skip
    """Every check of a scenario plugin: its declarations, and the run-level checks of ``strategies`` (default:
    :data:`SCENARIO_PLUGIN_STRATEGIES`, those it admits) on it under ``--tiny``."""
    from cl_suite import registry

    try:
        registry.load("scenario", scenario)
    except registry.RegistryError:
        raise
    except Exception as e:
        yield CheckResult("loads", scenario, "fail", _failure(e))
        return
    yield CheckResult("loads", scenario, "pass")
    chosen, unloadable = _loadable("strategy", SCENARIO_PLUGIN_STRATEGIES if strategies is None else strategies)
    for strategy, reason in unloadable.items():
        yield CheckResult("finishes", f"{strategy} on {scenario}", "skip", f"the strategy does not import: {reason}")
    admitted = [s for s in chosen if compatible(scenario, s)]
    for strategy in admitted:
        yield from check_pair(scenario, strategy, root, seed=seed, overrides=overrides)
    problems = _declaration_problems(scenario)
    others, _ = _loadable("strategy", registry.names("strategy"))
    problems += _refusal_problems([(scenario, s) for s in others if not compatible(scenario, s)],
                                  Path(root) / "refused", seed)  # fmt: skip
    if not admitted:
        problems.append(f"none of {', '.join(chosen)} can run on it: nothing was run")
    yield _outcome("declares", scenario, problems)


def _declaration_problems(scenario: str) -> list[str]:
    from cl_suite import metrics, registry
    from cl_suite.api import CAPABILITIES, SETTINGS

    cls = registry.load("scenario", scenario)
    problems = []
    if cls.setting not in SETTINGS:
        problems.append(f"setting {cls.setting!r} is not one of {list(SETTINGS)}")
    if set(cls.provides) - set(CAPABILITIES):
        problems.append(f"provides {sorted(set(cls.provides) - set(CAPABILITIES))}: unknown; known: {list(CAPABILITIES)}")
    if not cls.metrics or set(cls.metrics.values()) - {"max", "min"}:
        problems.append(f"metrics {dict(cls.metrics)} must map at least one name to 'max' or 'min'")
    unknown = [name for name in cls.summary if name not in metrics.SUMMARIES]
    if not cls.summary or unknown:
        problems.append(f"summary {list(cls.summary)} must be non-empty names of cl_suite.metrics.SUMMARIES")
    listed = registry.describe("scenario", scenario).settings
    if listed != (cls.setting,):
        problems.append(f"`cl-suite list` reads setting {listed[0]!r} from the source, the class has {cls.setting!r}: "
                        "declare it as a literal in the class body (or a base class's)")  # fmt: skip
    return problems


# -- pytest ----------------------------------------------------------------------------------------------------
def conformance_tests(*strategies: str, scenarios: Sequence[str] | None = None, scenario_plugin: str | None = None,
                      seed_scenarios: int | None = None) -> Callable[..., None]:  # fmt: skip
    """A parametrised pytest test, one case per strategy (or one for ``scenario_plugin``), that fails with every
    failing check's line. In a plugin package's tests::

        from cl_suite.testing import conformance_tests

        test_conformance = conformance_tests("my_package.my_method:MyMethod")
    """
    import pytest

    subjects = [scenario_plugin] if scenario_plugin else list(strategies)
    if not subjects:
        raise ValueError("conformance_tests needs a strategy (or scenario_plugin=...)")

    @pytest.mark.parametrize("subject", subjects)
    def test_conformance(subject: str, tmp_path: Path) -> None:
        if scenario_plugin:
            results = list(check_scenario(subject, tmp_path, strategies or None))
        else:
            results = list(check_strategy(subject, tmp_path, scenarios, seed_scenarios=seed_scenarios))
        failures = [r.line() for r in results if r.failed]
        if failures:
            pytest.fail(f"{len(failures)} of {len(results)} conformance checks failed:\n" + "\n".join(failures),
                        pytrace=False)  # fmt: skip

    return test_conformance


# -- helpers ---------------------------------------------------------------------------------------------------
def _outcome(check: str, subject: str, problems: list[str], note: str = "") -> CheckResult:
    return CheckResult(check, subject, "fail", "; ".join(problems)) if problems else CheckResult(check, subject, "pass", note)


def _needs_data(error: BaseException) -> bool:
    """A failure that is bad input rather than a plugin fault: a ConfigError (e.g. no ``scenario.root``) or a missing
    file. Only a full-size scenario may fail so (it is then skipped); the ``*-tiny`` ones generate their data."""
    from cl_suite.config import ConfigError

    causes = [error]
    while causes[-1].__cause__ is not None:
        causes.append(causes[-1].__cause__)
    return any(isinstance(c, (ConfigError, FileNotFoundError)) for c in causes)


def _failure(error: BaseException) -> str:
    """The error in one line, with the innermost frame outside cl_suite and torch (where a plugin went wrong)."""
    inner = error
    while inner.__cause__ is not None:
        inner = inner.__cause__
    text = " ".join(str(error).split()) or type(error).__name__
    import torch

    import cl_suite

    library = tuple(str(Path(m.__file__).parent) for m in (cl_suite, torch))
    frames = [f for f in traceback.extract_tb(inner.__traceback__) if not f.filename.startswith(library)]
    return f"{text} (at {frames[-1].filename}:{frames[-1].lineno} in {frames[-1].name})" if frames else text


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-")


def summarize(results: Sequence[CheckResult]) -> dict[str, Any]:
    """Counts of passed, failed and skipped checks."""
    return {status: sum(r.status == status for r in results) for status in ("pass", "fail", "skip")}
