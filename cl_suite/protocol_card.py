"""Protocol cards (DESIGN.md §9): what a scenario runs, printed without its data, for `cl-suite describe`.

A card joins what the scenario class declares (setting, metrics, summaries, the train recipe) with what the
scenario instance describes (:meth:`cl_suite.api.Scenario.describe`: tasks in order, sources, notes). JSON is the
complete form; the text form shortens long class lists and says so.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from cl_suite import config as config_mod
from cl_suite import registry

TEXT_CLASS_NAMES = 8  # class names shown per task in the text form


class CardError(LookupError):
    """A scenario that cannot describe itself without data on disk."""


def build(scenario: str, overrides: dict[str, Any] | None = None, *, tiny: bool = False) -> dict[str, Any]:
    """The protocol card of ``scenario`` under ``overrides`` (``scenario.*`` and ``train.*`` keys, as with --set)."""
    overrides = dict(overrides or {})
    cls = registry.load("scenario", scenario)
    sections: dict[str, dict[str, Any]] = {"scenario": {}, "train": {}}
    for key, value in overrides.items():
        head, _, rest = key.partition(".")
        if head == "backbone" and not rest:
            head, rest = "scenario", "backbone"
        if head not in sections or not rest:
            raise config_mod.ConfigError(f"describe takes scenario.* and train.* keys, got {key!r}")
        sections[head][rest] = value
    scenario_cfg = config_mod.build_dataclass(cls.Config, sections["scenario"], "scenario")
    train = config_mod.build_dataclass(config_mod.TrainConfig, {**cls.train_defaults, **sections["train"]}, "train")
    instance = cls(scenario_cfg, tiny=tiny)
    try:
        described = instance.describe()
    except (FileNotFoundError, NotADirectoryError) as e:
        raise CardError(f"scenario {scenario!r} describes its tasks only from data on disk ({e})") from e
    return _jsonable({
        "scenario": scenario,
        "setting": cls.setting,
        "metrics": dict(cls.metrics),
        "summary": list(cls.summary),
        "backbone": instance.backbone,
        "config": dataclasses.asdict(scenario_cfg),
        "train": dataclasses.asdict(train),
        "full_tune_train": dict(cls.full_tune_defaults(scenario_cfg)),  # train.* of whole-model fine-tuning, if other
        "sources": list(described.get("sources", ())),
        "notes": list(described.get("notes", ())),
        "tasks": list(described["tasks"]),
    })


def to_json(card: dict[str, Any]) -> str:
    return json.dumps(card, indent=2, ensure_ascii=False)


def to_text(card: dict[str, Any]) -> str:
    """A readable card: one block per task, then the recipe and the sources."""
    metrics = ", ".join(f"{name} ({'higher' if way == 'max' else 'lower'} is better)" for name, way in card["metrics"].items())
    lines = [
        f"scenario {card['scenario']}: setting {card['setting']}, {len(card['tasks'])} tasks, backbone {card['backbone']}",
        f"metrics: {metrics}; summaries: {', '.join(card['summary'])}",
        "config: " + ", ".join(f"{k}={_short(v)}" for k, v in card["config"].items()),
        "",
        "tasks:",
    ]
    for i, task in enumerate(card["tasks"], 1):
        lines.append(f"  {i}. {task['name']}")
        for key, value in task.items():
            if key == "name":
                continue
            if key == "class_names" and isinstance(value, list) and len(value) > TEXT_CLASS_NAMES:
                shown = ", ".join(map(str, value[:TEXT_CLASS_NAMES]))
                lines.append(f"     class_names ({len(value)}): {shown}, … (--format json lists all)")
            elif isinstance(value, list) and key in ("templates", "class_names", "organs", "labels"):
                lines.append(f"     {key} ({len(value)}): " + " | ".join(map(str, value)))
            else:
                lines.append(f"     {key}: {_short(value)}")
    lines += ["", "train recipe: " + ", ".join(f"{k}={_short(v)}" for k, v in card["train"].items())]
    if card.get("full_tune_train"):
        changed = ", ".join(f"{k}={_short(v)}" for k, v in card["full_tune_train"].items())
        lines.append(f"  strategies that tune the whole model (Strategy.tunes_whole_model): {changed}")
    if card["sources"]:
        lines += ["", "sources:"]
        lines += [f"  - {s.get('what', '')}: {s.get('repo', '')} {s.get('path', '')} @ {s.get('commit', '')}".rstrip()
                  for s in card["sources"]]  # fmt: skip
    if card["notes"]:
        lines += ["", "notes:", *(f"  - {note}" for note in card["notes"])]
    return "\n".join(lines)


def _short(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 200 else text[:197] + "..."


def _jsonable(value: Any) -> Any:
    """Tuples become lists and numpy scalars plain numbers, so the card round-trips through JSON unchanged."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "item") and callable(value.item):
        return value.item()
    return value
