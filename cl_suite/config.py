"""The typed run config: dataclasses filled from a YAML file, CLI flags and ``key=value`` overrides.

``backbone=X`` at the top level is short for ``scenario.backbone=X``. Layering, lowest first: the dataclass defaults,
the scenario's ``train_defaults``, its ``full_tune_defaults`` (for strategies that tune the whole model), the
strategy's ``train_defaults`` (and its ``scenario_defaults`` for the scenario's keys), the YAML file, the CLI flags,
then ``--set`` overrides. Every value is coerced to its field's
annotated type; an unknown key or a bad value raises :class:`ConfigError` naming the valid keys or the type.
The resolved config is what a run records (``config.yaml``) and what ``cl-suite run <config.yaml>`` re-runs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml


class ConfigError(ValueError):
    """A config key that does not exist or a value of the wrong type."""


SEED_MAX = 2**32 - 1  # numpy's seed range; the per-task seeds derived from it stay inside torch's 64 bits
INT_MIN, INT_MAX = -(2**63), 2**63 - 1  # every int field: what a torch int64 holds
DEVICE_PATTERN = re.compile(r"auto|cpu|mps|cuda(:\d+)?")
DEVICES = "auto, cpu, cuda, cuda:N, mps"

BOUNDS: dict[str, tuple[float | None, float | None, bool]] = {
    # dotted key: (lowest, highest, lowest excluded). A list value (e.g. one epoch count per task) is checked
    # item by item, so a field may hold a number or a list of them.
    "seed": (0, SEED_MAX, False),
    "train.epochs": (1, None, False),
    "train.task_epochs": (1, None, False),
    "train.max_steps": (0, None, False),
    "train.batch_size": (1, None, False),
    "train.eval_batch_size": (1, None, False),
    "train.lr": (0, None, True),
    "train.weight_decay": (0, None, False),
    "train.momentum": (0, 1, False),
    "train.warmup_steps": (0, None, False),
    "train.grad_clip": (0, None, False),
    "train.log_every": (1, None, False),
}
"""Ranges checked at resolve time, so a value no run can use is refused before a run folder exists. Plugin
``Config`` fields may declare their own with ``field(metadata={"min": 0, "max": 1, "exclusive_min": True})``."""


@dataclass
class TrainConfig:
    """How the runner trains each task; scenarios and strategies adjust the defaults."""

    epochs: int = 1
    task_epochs: tuple[int, ...] = ()  # per task, in task order (entry i: task i); overrides epochs (TRACE: 5,3,7,...)
    max_steps: int = 0  # per task; > 0 overrides epochs and task_epochs
    batch_size: int = 32
    eval_batch_size: int = 256
    optimizer: Literal["adamw", "adam", "sgd"] = "adamw"
    lr: float = 1e-3
    weight_decay: float = 0.0
    momentum: float = 0.9  # sgd only
    scheduler: Literal["constant", "cosine"] = "constant"
    warmup_steps: int = 0
    grad_clip: float = 0.0  # max gradient norm; 0 disables
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    log_every: int = 10
    keep_checkpoints: Literal["last", "all", "none"] = "last"  # none: deleted when the run succeeds (kept until
    # then so --resume works), e.g. for published records

    def epochs_for(self, task_index: int) -> int:
        """Epochs of task ``task_index``: its ``task_epochs`` entry when the list is set, else ``epochs``."""
        return self.task_epochs[task_index] if self.task_epochs else self.epochs


@dataclass
class RunConfig:
    """A fully resolved run: names, seed, device, the train block, and the plugins' own config objects."""

    scenario: str
    strategy: str
    seed: int = 0
    tiny: bool = False
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    kernels: Literal["auto", "torch", "triton"] = "auto"
    train: TrainConfig = field(default_factory=TrainConfig)
    scenario_config: Any = None
    strategy_config: Any = None

    def to_dict(self) -> dict[str, Any]:
        """Nested, YAML-friendly form; ``resolve(d)`` of it gives back an equal config."""
        return {
            "scenario": {"name": self.scenario, **_plain(dataclasses.asdict(self.scenario_config))},
            "strategy": {"name": self.strategy, **_plain(dataclasses.asdict(self.strategy_config))},
            "seed": self.seed,
            "tiny": self.tiny,
            "device": self.device,
            "kernels": self.kernels,
            "train": _plain(dataclasses.asdict(self.train)),
        }

    def config_hash(self) -> str:
        """A short digest of the resolved config: equal configs give equal hashes (used to skip finished cells)."""
        blob = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:8]

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


_TOP_KEYS = ("scenario", "strategy", "seed", "tiny", "device", "kernels", "train")


def load_yaml(path: str | Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(Path(path).read_text())
    except FileNotFoundError as e:
        raise ConfigError(f"config file not found: {path}") from e
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {path} is not valid YAML: {e}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping, not {type(data).__name__}")
    return data


def parse_overrides(items: list[str]) -> dict[str, str]:
    """``["train.lr=1e-3", "seed=1"]`` -> ``{"train.lr": "1e-3", "seed": "1"}``."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {item!r} is not of the form key=value (e.g. train.lr=1e-3)")
        out[key.strip()] = value.strip()
    return out


def resolve(raw: dict[str, Any], overrides: dict[str, Any] | None = None, *, file_refs: bool = True) -> RunConfig:
    """Build a :class:`RunConfig` from a nested mapping (YAML form) plus dotted overrides.

    ``file_refs=False``: ``raw`` came from a file, so a ``module:Class`` it names is imported only when installed
    (see :func:`cl_suite.registry.load`); names given in ``overrides`` count as typed."""
    from cl_suite import registry

    nested = _nest(raw, overrides or {})
    if "backbone" in nested:  # `--set backbone=X` is short for scenario.backbone (the scenario builds the model)
        section = nested.get("scenario")
        nested["scenario"] = {**(section if isinstance(section, dict) else {"name": section}),
                              "backbone": nested.pop("backbone")}  # fmt: skip
    unknown = sorted(set(nested) - set(_TOP_KEYS))
    if unknown:
        raise ConfigError(f"unknown config key {unknown[0]!r}; valid top-level keys: {', '.join(_TOP_KEYS)}")
    sections = {k: nested.get(k) or {} for k in ("scenario", "strategy", "train")}
    if not isinstance(sections["train"], dict):
        raise ConfigError(f"'train' must be a mapping of train.* keys, got {sections['train']!r}")
    for kind in ("scenario", "strategy"):
        if not isinstance(sections[kind], dict):
            sections[kind] = {"name": sections[kind]}
    names = {}
    for kind in ("scenario", "strategy"):
        name = sections[kind].pop("name", None)
        if not name:
            raise ConfigError(f"no {kind} given: pass --{kind} NAME (see `cl-suite list`)")
        names[kind] = str(name)
    typed = {kind: file_refs or any(k in (overrides or {}) for k in (kind, f"{kind}.name"))
             for kind in ("scenario", "strategy")}  # fmt: skip
    scenario_cls = registry.load("scenario", names["scenario"], typed=typed["scenario"])
    strategy_cls = registry.load("strategy", names["strategy"], typed=typed["strategy"])

    scenario_config = build_dataclass(
        scenario_cls.Config, {**_applicable(strategy_cls.scenario_defaults, scenario_cls.Config), **sections["scenario"]},
        "scenario",
    )
    full_tune = scenario_cls.full_tune_defaults(scenario_config) if strategy_cls.tunes_whole_model else {}
    train_values = {**scenario_cls.train_defaults, **full_tune, **strategy_cls.train_defaults}
    train = build_dataclass(TrainConfig, {**train_values, **sections["train"]}, "train")
    top = build_dataclass(
        _TopLevel, {k: nested[k] for k in ("seed", "tiny", "device", "kernels") if k in nested}, ""
    )
    if not DEVICE_PATTERN.fullmatch(top.device):
        raise ConfigError(f"device: expected one of {DEVICES}, got {top.device!r}")
    return RunConfig(
        scenario=names["scenario"],
        strategy=names["strategy"],
        seed=top.seed,
        tiny=top.tiny,
        device=top.device,
        kernels=top.kernels,
        train=train,
        scenario_config=scenario_config,
        strategy_config=build_dataclass(strategy_cls.Config, sections["strategy"], "strategy"),
    )


def _applicable(values: typing.Mapping[str, Any], cls: type) -> dict[str, Any]:
    """The entries of ``values`` that are fields of the dataclass ``cls`` (a strategy's scenario defaults)."""
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in values.items() if k in names}


@dataclass
class _TopLevel:
    seed: int = 0
    tiny: bool = False
    device: str = "auto"
    kernels: Literal["auto", "torch", "triton"] = "auto"


def build_dataclass(cls: type, values: dict[str, Any], prefix: str) -> Any:
    """Instantiate ``cls`` from ``values``, coercing each to its annotated type; unknown keys are errors."""
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls) if f.init}
    kwargs = {}
    for key, value in values.items():
        dotted = f"{prefix}.{key}" if prefix else key
        if key not in fields:
            valid = ", ".join(f"{prefix}.{f}" if prefix else f for f in sorted(fields)) or "(none)"
            raise ConfigError(f"unknown config key {dotted!r}; valid keys: {valid}")
        kwargs[key] = coerce(value, hints[key], dotted)
        check_bounds(dotted, kwargs[key], _field_bounds(cls, key, dotted))
    return cls(**kwargs)


def _field_bounds(cls: type, key: str, dotted: str) -> tuple[float | None, float | None, bool] | None:
    meta = next(f.metadata for f in dataclasses.fields(cls) if f.name == key)
    if "min" in meta or "max" in meta:
        return meta.get("min"), meta.get("max"), bool(meta.get("exclusive_min"))
    return BOUNDS.get(dotted)


def check_bounds(key: str, value: Any, bounds: tuple[float | None, float | None, bool] | None) -> None:
    """Refuse a number (or a list item) outside ``bounds``, naming the key, the value and the accepted range."""
    if bounds is None or value is None or isinstance(value, (bool, str)):
        return
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            check_bounds(f"{key}[{i}]", item, bounds)
        return
    lo, hi, open_lo = bounds
    below = lo is not None and (value <= lo if open_lo else value < lo)
    if below or (hi is not None and value > hi):
        low = "" if lo is None else f"{'>' if open_lo else '>='} {lo}"
        high = "" if hi is None else f"<= {hi}"
        raise ConfigError(f"{key}: expected a number {' and '.join(filter(None, [low, high]))}, got {value!r}")


def coerce(value: Any, tp: Any, key: str) -> Any:
    """Convert ``value`` (a string from the command line or a YAML scalar/list) to the type ``tp``."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        is_none = value is None or (isinstance(value, str) and value.lower() in ("none", "null", ""))
        if is_none and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return coerce(value, arg, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{key}: {value!r} matches none of {_name(tp)}")
    if origin is Literal:
        choices = args
        for choice in choices:
            try:
                if coerce(value, type(choice), key) == choice:
                    return choice
            except ConfigError:
                continue
        raise ConfigError(f"{key}: expected one of {', '.join(map(repr, choices))}, got {value!r}")
    if origin in (tuple, list):
        if isinstance(value, str):
            text = value.strip()
            value = yaml.safe_load(text) if text.startswith("[") else [v for v in text.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list ({_name(tp)}), got {value!r}")
        if origin is tuple and (len(args) != 2 or args[1] is not Ellipsis):
            if len(args) != len(value):
                raise ConfigError(f"{key}: expected {len(args)} items ({_name(tp)}), got {len(value)}")
            return tuple(coerce(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
        item = args[0] if args else Any
        items = [coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        raise ConfigError(f"{key}: expected bool (true/false), got {value!r}")
    if tp is int:
        number = None
        if isinstance(value, int) and not isinstance(value, bool):
            number = value
        elif isinstance(value, str) and re.fullmatch(r"[+-]?\d+", value.strip()):
            number = int(value)
        if number is None:
            raise ConfigError(f"{key}: expected int, got {value!r}")
        if not INT_MIN <= number <= INT_MAX:
            raise ConfigError(f"{key}: expected an int in [-2**63, 2**63 - 1], got {value!r}")
        return number
    if tp is float:
        number = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value) if abs(value) < 1e308 or isinstance(value, float) else math.inf
        elif isinstance(value, str):
            with contextlib.suppress(ValueError):
                number = float(value)
        if number is None:
            raise ConfigError(f"{key}: expected float, got {value!r}")
        if not math.isfinite(number):
            raise ConfigError(f"{key}: expected a finite float, got {value!r}")
        return number
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{key}: expected str, got {value!r}")
    raise ConfigError(f"{key}: fields of type {_name(tp)} are not supported in configs")


def _nest(raw: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    nested = {k: (dict(v) if isinstance(v, dict) else v) for k, v in raw.items()}
    for key, value in overrides.items():
        head, _, rest = key.partition(".")
        if not rest:
            nested[head] = value
            continue
        section = nested.get(head)
        if section is None or not isinstance(section, dict):
            section = {} if section is None else {"name": section}
            nested[head] = section
        section[rest] = value
    return nested


def _plain(value: Any) -> Any:
    """Tuples become lists so the YAML and JSON forms are plain."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")
