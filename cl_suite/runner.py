"""The run loop (DESIGN.md §4): zero-shot row, then per task before_task -> train -> after_task -> evaluate all.

Determinism: the global RNGs are seeded from (seed, task index) at the start of every task, data-loader shuffles
draw from them, and the optimizer is rebuilt per task. So a run resumed from the checkpoint after task t replays
task t+1 exactly as an uninterrupted run would, and ends with the same score matrix on the same machine.
"""

from __future__ import annotations

import math
import random
import re
import sys
import time
from contextlib import nullcontext
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import TextIO

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from cl_suite import config as config_mod
from cl_suite import metrics, registry
from cl_suite.api import Context, Scenario, Strategy, Task, incompatibility, primary_metric, to_device
from cl_suite.env_info import environment, peak_memory_mb
from cl_suite.results import CONFIG_FILE, EVALS_FILE, TRAIN_FILE, RunStore, dumps


class RunError(RuntimeError):
    """The run started but failed (non-finite loss, a plugin raised); its record says status failed."""


class NonFiniteLoss(RunError):
    pass


class StrategyStatsError(RunError):
    """``strategy_stats()`` returned something the run record cannot hold (not a JSON-serialisable dict)."""


def check_compatible(scenario_cls: type[Scenario], strategy_cls: type[Strategy], names: tuple[str, str]) -> None:
    """Refuse a strategy that cannot run on the scenario (setting, model capabilities), before anything loads."""
    reason = incompatibility(scenario_cls, strategy_cls)
    if reason:
        raise config_mod.ConfigError(f"strategy {names[1]!r} cannot run on scenario {names[0]!r}: {reason}")


def make_run_id(cfg: config_mod.RunConfig) -> str:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    slug = re.sub(r"[^a-z0-9]+", "-", f"{cfg.scenario}-{cfg.strategy}".lower()).strip("-")
    return f"{stamp}-{slug}-s{cfg.seed}-{cfg.config_hash()}"


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def pick_device(name: str) -> torch.device:
    """The torch device for a config's ``device``; ConfigError when this machine does not have it."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise config_mod.ConfigError(f"device {name!r} asked for, but CUDA is not available; use device=cpu")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise config_mod.ConfigError(f"device {name!r} asked for, but this machine has {torch.cuda.device_count()} "
                                     "CUDA device(s)")  # fmt: skip
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise config_mod.ConfigError(f"device {name!r} asked for, but MPS is not available; use device=cpu")
    return device


def check_before_start(cfg: config_mod.RunConfig, scenario_cls: type[Scenario]) -> None:
    """What can be refused before a run folder exists: the scenario's own config checks (its constructor), its data
    on disk (MissingData) and the device."""
    try:
        scenario = scenario_cls(cfg.scenario_config, tiny=cfg.tiny)
    except (ValueError, TypeError) as e:
        raise config_mod.ConfigError(f"scenario {cfg.scenario!r}: {e}") from e
    scenario.check_data()  # MissingData: bad input, before any folder
    pick_device(cfg.device)


def start(cfg: config_mod.RunConfig, results_root: str | Path, *, out: TextIO | None = None,
          progress: bool = True, run_id: str | None = None) -> RunStore:  # fmt: skip
    """Create a run folder for ``cfg`` and execute it. Raises ConfigError (the strategy does not support the
    scenario's setting) or MissingData (the scenario's data is not on disk) before creating anything. ``run_id`` names the folder (default: a timestamped id);
    sweeps pass an id derived from the config alone, so a re-run finds the same folder."""
    scenario_cls, strategy_cls = registry.load("scenario", cfg.scenario), registry.load("strategy", cfg.strategy)
    check_compatible(scenario_cls, strategy_cls, (cfg.scenario, cfg.strategy))
    check_before_start(cfg, scenario_cls)
    out = sys.stderr if out is None else out
    run_id = run_id or make_run_id(cfg)
    record = {
        "scenario": cfg.scenario, "strategy": cfg.strategy, "seed": cfg.seed, "tiny": cfg.tiny,
        "config_hash": cfg.config_hash(), "config": cfg.to_dict(), "metric": primary_metric(scenario_cls),
        "direction": next(iter(scenario_cls.metrics.values())), "setting": scenario_cls.setting,
        "metrics": dict(scenario_cls.metrics), "summary_names": list(scenario_cls.summary),
        "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }  # fmt: skip
    for attempt in range(1, 1000):  # the same config started twice in one second gets a suffix
        try:
            store = RunStore.create(results_root, run_id if attempt == 1 else f"{run_id}-{attempt}", record,
                                    cfg.to_yaml())  # fmt: skip
            break
        except FileExistsError:
            continue
    try:
        _execute(store, cfg, scenario_cls, strategy_cls, resume=False, out=out, progress=progress)
    finally:
        store.release()
    return store


def resume(run_dir: str | Path, *, out: TextIO | None = None, progress: bool = True,
           cfg: config_mod.RunConfig | None = None, allow_config_refs: bool = False) -> RunStore:  # fmt: skip
    """Continue a run from its last finished task, holding the run folder's lock (locks.Busy if another process
    holds it). The config comes from the folder's config.yaml, where a ``module:Class`` that is not installed is
    refused unless ``allow_config_refs``; or ``cfg``, a config the caller resolved, which must have the
    folder's config hash."""
    out = sys.stderr if out is None else out
    store = RunStore(run_dir).acquire()
    try:
        record = store.read_record()
        if record["status"] == "success":
            raise config_mod.ConfigError(f"run {record['run_id']} already finished successfully; nothing to resume")
        if cfg is None:
            cfg = config_mod.resolve(config_mod.load_yaml(store.path / CONFIG_FILE), file_refs=allow_config_refs)
        elif record.get("config_hash") not in (None, cfg.config_hash()):
            raise config_mod.ConfigError(f"run {record['run_id']} was made by config {record['config_hash']}, "
                                         f"not {cfg.config_hash()}; it cannot be resumed with this config")  # fmt: skip
        scenario_cls, strategy_cls = registry.load("scenario", cfg.scenario), registry.load("strategy", cfg.strategy)
        check_before_start(cfg, scenario_cls)
        store.update(status="running", error=None)
        _execute(store, cfg, scenario_cls, strategy_cls, resume=True, out=out, progress=progress)
    finally:
        store.release()
    return store


def _execute(store: RunStore, cfg, scenario_cls, strategy_cls, *, resume: bool, out: TextIO, progress: bool):
    t0 = time.perf_counter()
    wall_before = 0.0
    try:
        seed_everything(cfg.seed)
        device = pick_device(cfg.device)
        scenario = scenario_cls(cfg.scenario_config, tiny=cfg.tiny)
        tasks = scenario.tasks()
        if cfg.train.task_epochs and (len(cfg.train.task_epochs) < len(tasks) or min(cfg.train.task_epochs) < 1):
            raise config_mod.ConfigError(f"train.task_epochs needs a count >= 1 for each of the {len(tasks)} tasks, "
                                         f"got {list(cfg.train.task_epochs)}")  # fmt: skip
        state = {"task": -1}
        ctx = Context(
            device=device, dtype=torch.float32, seed=cfg.seed, num_tasks=len(tasks), setting=scenario.setting,
            train=cfg.train, make_loader=partial(_make_loader, scenario, cfg.train),
            log=lambda **fields: store.append(TRAIN_FILE, [{"task": state["task"], "kind": "strategy", **fields}]),
            kernel_backend=cfg.kernels, tasks_seen=lambda: tasks[: state["task"] + 1],
        )  # fmt: skip
        model = scenario.build_model(ctx).to(device)
        strategy = strategy_cls(cfg.strategy_config)
        strategy.setup(model, ctx)
        strategy.to(device)
        record = store.update(
            backbone=scenario.backbone, num_tasks=len(tasks), tasks=[t.name for t in tasks],
            env=environment(device),
        )  # fmt: skip
        stats_log = list(record.get("strategy_stats") or [])
        trainable_max = (record.get("cost") or {}).get("trainable_params") or 0
        first = 0
        checkpoint = _load_checkpoint(store, device, out) if resume else None
        if checkpoint:
            done, saved = checkpoint
            for task in tasks[: done + 1]:
                model.on_task_start(task)
            strategy.load_state_dict(saved["strategy"])
            wall_before = float(saved.get("wall_s", 0.0))
            store.truncate_after(done)
            # the stats saved with the checkpoint (a kill between it and the record update loses nothing)
            stats_log = [s for s in saved.get("strategy_stats", stats_log) if s["task"] <= done]
            first = done + 1
            print(f"resuming {store.path.name} after task {done + 1}/{len(tasks)}", file=out)
        else:
            store.truncate_after(-2)  # a fresh start, or a resume that never finished its first task
            stats_log = []
            _evaluate_all(store, scenario, strategy, tasks, ctx, after=-1)

        for task in tasks[first:]:
            state["task"] = task.index
            seed_everything(cfg.seed * 100_003 + task.index + 1)
            print(f"task {task.index + 1}/{len(tasks)}: {task.name}", file=out)
            model.on_task_start(task)
            strategy.before_task(task)
            if strategy.trains:
                trainable_max = max(trainable_max, _train_task(store, strategy, task, ctx, progress, out))
                while (epochs := strategy.next_round(task)) is not None:  # more passes (SEMA: phases, expansions)
                    trainable_max = max(trainable_max, _train_task(store, strategy, task, ctx, progress, out, epochs))
            strategy.after_task(task)
            row = _evaluate_all(store, scenario, strategy, tasks, ctx, after=task.index)
            print("  eval " + "  ".join(f"{t.name}={v:.2f}" for t, v in zip(tasks, row)), file=out)
            stats_log.append({"task": task.index, **_strategy_stats(strategy, task)})
            wall = wall_before + time.perf_counter() - t0
            store.save_checkpoint(task.index, {"task": task.index, "strategy": strategy.state_dict(), "wall_s": wall,
                                               "strategy_stats": _plain(stats_log)}, keep=cfg.train.keep_checkpoints)  # fmt: skip
            store.update(tasks_done=task.index + 1, strategy_stats=stats_log,
                         cost=_cost(strategy, device, wall, trainable_max))  # fmt: skip
        _finish(store, scenario, strategy, device, wall_before + time.perf_counter() - t0, trainable_max)
        if cfg.train.keep_checkpoints == "none":
            store.drop_checkpoints()
    except KeyboardInterrupt:
        _mark_failed(store, "interrupted; continue with --resume")
        raise
    except Exception as e:
        message = f"{type(e).__name__}: {e}"
        if not _mark_failed(store, message):
            message += " (the record could not be updated: it still says running; --resume continues it)"
        if isinstance(e, RunError) and message == f"{type(e).__name__}: {e}":
            raise
        raise RunError(message) from e  # after the start, even a config problem is a failed run (exit 1)


def _mark_failed(store: RunStore, error: str) -> bool:
    """Record the failure; False when even that write fails (a full disk), so the original error is not lost."""
    try:
        store.update(status="failed", error=error, ended_at=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    except (OSError, ValueError):
        return False
    return True


def _plain(stats: list[dict]) -> list[dict]:
    """The stats as JSON types (numpy scalars become numbers), so a ``weights_only`` load accepts the checkpoint."""
    import json

    from cl_suite.results import dumps

    return json.loads(f"[{','.join(dumps(s) for s in stats)}]")


def _load_checkpoint(store: RunStore, device: torch.device, out: TextIO) -> tuple[int, dict] | None:
    """(task index, state) of the newest checkpoint that loads; an unreadable one is named and the previous kept
    one used. RunError (naming the files and how to start over) when checkpoints exist and none loads."""
    kept = store.checkpoints()
    failures = []
    for done, path in kept:
        try:
            saved = torch.load(path, map_location=device, weights_only=True)
            if not isinstance(saved, dict) or "strategy" not in saved:
                raise ValueError("not a cl-suite checkpoint")
        except Exception as e:  # a torn zip, a truncated pickle, a foreign file
            failures.append(f"{path} ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})")
            continue
        if failures:
            print(f"checkpoint {failures[-1]} cannot be read; resuming from the previous kept one, {path.name}",
                  file=out)  # fmt: skip
        return done, saved
    if failures:
        raise RunError(f"no checkpoint of this run can be read: {'; '.join(failures)}. Start over with "
                       f"`cl-suite run {store.path / CONFIG_FILE}`, or delete {store.path / 'checkpoints'} and "
                       "resume again to restart this run from its first task")  # fmt: skip
    return None


def _strategy_stats(strategy: Strategy, task: Task) -> dict:
    """The strategy's stats after ``task``, checked here so a bad value names its source instead of failing in run.json."""
    stats = strategy.strategy_stats()
    try:
        if not isinstance(stats, dict):
            raise TypeError(f"it returned a {type(stats).__name__}, not a dict")
        dumps(stats)
    except (TypeError, ValueError) as e:
        raise StrategyStatsError(f"strategy_stats() after task {task.index + 1} ({task.name}) is not a JSON-serialisable "
                                 f"dict: {e}; return numbers, strings, lists and dicts (tensor.item(), .tolist())") from e
    return stats


def _make_loader(scenario: Scenario, train, dataset, *, shuffle: bool = False, batch_size: int | None = None):
    generator = torch.Generator().manual_seed(int(torch.randint(2**31 - 1, ()).item()))
    return DataLoader(dataset, batch_size=batch_size or train.batch_size, shuffle=shuffle, generator=generator,
                      collate_fn=scenario.collate, num_workers=0)  # fmt: skip


def _schedule(train, total: int):
    def factor(step: int) -> float:
        if train.warmup_steps and step < train.warmup_steps:
            return (step + 1) / train.warmup_steps
        if train.scheduler == "cosine":
            span = max(1, total - train.warmup_steps)
            return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - train.warmup_steps) / span)))
        return 1.0

    return factor


def _train_task(store: RunStore, strategy: Strategy, task: Task, ctx: Context, progress: bool, out,
                epochs: int | None = None) -> int:  # fmt: skip
    """Train one pass over a task (``epochs``: the strategy's choice for a later pass, else the task's
    ``train.epochs_for``); returns
    the number of trainable parameters."""
    train = ctx.train
    params = list(strategy.trainable_parameters())
    if not params:
        raise RunError(f"strategy has no trainable parameters for task {task.name!r} (set trains = False?)")
    n_trainable = sum(p.numel() for p in params)
    optimizer = strategy.configure_optimizer(params)
    loader = ctx.loader(strategy.train_data(task), shuffle=True)
    total = train.max_steps or (train.epochs_for(task.index) if epochs is None else epochs) * len(loader)
    factor, lr_scale = _schedule(train, total), float(task.meta.get("lr_scale", 1.0))  # a protocol's per-task lr
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_scale * factor(step))
    amp = train.precision != "fp32"
    amp_dtype = torch.bfloat16 if train.precision == "bf16" else torch.float16
    scaler = torch.amp.GradScaler(ctx.device.type, enabled=train.precision == "fp16")
    bar = tqdm(total=total, desc=f"  train {task.name}", file=out, disable=None if progress else True, leave=False, mininterval=1)
    step, epoch, logs = 0, 0, []
    strategy.train()
    t_start = time.perf_counter()
    while step < total:
        for batch in loader:
            batch = to_device(batch, ctx.device)
            with torch.autocast(ctx.device.type, dtype=amp_dtype) if amp else nullcontext():
                loss = strategy.training_step(batch, task)
            value = float(loss.detach())
            if not math.isfinite(value):
                raise NonFiniteLoss(f"task {task.index} ({task.name}), step {step}: loss is {value}; "
                                    "lower train.lr or set train.grad_clip")  # fmt: skip
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            strategy.after_backward()
            if train.grad_clip > 0:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(params, train.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            strategy.after_step()
            step += 1
            bar.update(1)
            if step % train.log_every == 0 or step == total:
                lr = optimizer.param_groups[0]["lr"]
                logs.append({"task": task.index, "step": step, "epoch": epoch, "loss": value, "lr": lr,
                             "t_s": round(time.perf_counter() - t_start, 3)})  # fmt: skip
                bar.set_postfix(loss=f"{value:.4f}")
            if step >= total:
                break
        epoch += 1
    bar.close()
    store.append(TRAIN_FILE, logs)
    if logs:
        print(f"  trained {step} steps, final loss {logs[-1]['loss']:.4f}", file=out)
    return n_trainable


@torch.no_grad()
def _evaluate_all(store: RunStore, scenario: Scenario, strategy: Strategy, tasks: list[Task], ctx: Context,
                  after: int) -> list[float]:  # fmt: skip
    """Evaluate on every task (seen and unseen); append the rows; return the primary scores."""
    strategy.eval()
    metric = primary_metric(scenario)
    rows, primary = [], []
    for task in tasks:
        task_id = task.index if scenario.setting == "til" else None
        scores = dict(scenario.evaluate(partial(strategy.predict, task_id=task_id), task, ctx))
        n = scores.pop("n", len(task.test))
        if metric not in scores:
            raise RunError(f"scenario evaluate() returned {sorted(scores)} without its primary metric {metric!r}")
        rows += [{"after_task": after, "eval_task": task.index, "metric": m, "value": float(v), "n": n}
                 for m, v in scores.items()]  # fmt: skip
        primary.append(float(scores[metric]))
    store.append(EVALS_FILE, rows)
    return primary


def _cost(strategy: Strategy, device: torch.device, wall: float, trainable: int) -> dict:
    return {
        "wall_s": round(wall, 3),
        "peak_mem_mb": round(peak_memory_mb(device), 1),
        "trainable_params": trainable,
        "added_inference_params": int(strategy.added_inference_parameters()),
        "total_params": sum(p.numel() for p in strategy.parameters()),
    }


def _finish(store: RunStore, scenario: Scenario, strategy: Strategy, device, wall: float, trainable: int) -> None:
    import pandas as pd

    from cl_suite.results import score_matrix

    record = store.read_record()
    evals = pd.DataFrame([{"n": None, **r} for r in store.read_lines(EVALS_FILE)])
    R, n = score_matrix(evals, record["metric"], record["num_tasks"])
    summary = metrics.summarize(R, scenario.summary, n)
    store.update(status="success", summary=summary, cost=_cost(strategy, device, wall, trainable),
                 ended_at=datetime.now(timezone.utc).isoformat(timespec="seconds"))  # fmt: skip
