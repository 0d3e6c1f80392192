"""Published (paper) numbers from ``<results root>/reference/*.yaml``, as one tidy table.

These numbers were not measured here, so they are kept apart from runs and shown only beside runs of the same
protocol (see :func:`protocol_of`). Each file holds ``tables``; a table is one protocol on one backbone::

    tables:
      - protocol: mtil-order1                 # the id a scenario's runs carry (``protocol`` in their record)
        benchmark: MTIL, 11 domains, Order I  # human-readable protocol name
        backbone: clip-vit-b16
        metrics: {mtil_transfer: max, mtil_last: max}   # published metric -> direction (max/min is better)
        source: ../shared/reference/benchmarks.md §2.1  # where the numbers were transcribed from
        rows:
          - {method: ZSCL, mtil_transfer: 68.1, mtil_last: 83.6, paper: ZSCL (ICCV 2023), tag: code}
          - {method: DIKI, mtil_transfer: {value: 68.7, tag: recall}, mtil_last: 85.1, paper: ..., tag: src}

A cell is a number or ``{value, std, tag}`` (a cell tag overrides the row's). A row may override ``backbone``.
Verification tags are those of the reference documents (:data:`TAGS`). A file that does not follow this schema is
skipped with a warning, like a corrupted run record in :func:`cl_suite.results.load_runs`.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

import pandas as pd

REFERENCE_DIR = "reference"
TAGS = {
    "V": "read in the paper, the official repository or project page",
    "N": "third-party paper note; check against the PDF",
    "M": "unverified recollection; confirm before use",
    "code": "read in the public repository",
    "src": "read on a public page, README or issue (often a copy of a paper table)",
    "recall": "unverified recollection; confirm before use",
}
COLUMNS = ["protocol", "benchmark", "backbone", "method", "metric", "direction", "value", "std", "tag", "paper",
           "source", "note", "file"]  # fmt: skip
ROW_KEYS = {"method", "paper", "tag", "note", "backbone"}


class ReferenceError(ValueError):
    """A reference file that does not follow the schema (one line saying what is wrong)."""


def load_reference(root: str | Path) -> pd.DataFrame:
    """Every published number under ``<root>/reference/`` (one row per value). Bad files are skipped with a warning."""
    folder = Path(root) / REFERENCE_DIR
    rows: list[dict[str, Any]] = []
    for path in sorted(folder.glob("*.y*ml")) if folder.is_dir() else []:
        try:
            rows += parse_file(path)
        except (OSError, UnicodeDecodeError, ReferenceError) as e:
            warnings.warn(f"skipped reference file {path}: {e}", stacklevel=2)
    return pd.DataFrame(rows, columns=COLUMNS)


def parse_file(path: Path) -> list[dict[str, Any]]:
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ReferenceError(f"not valid YAML{where} ({getattr(e, 'problem', None) or type(e).__name__})") from e
    if not isinstance(data, dict) or not isinstance(data.get("tables"), list):
        raise ReferenceError("expected a mapping with a 'tables' list")
    rows = []
    for number, table in enumerate(data["tables"], 1):
        rows += _parse_table(table, f"{path.name} table {number}", path.name)
    return rows


def _parse_table(table: Any, where: str, filename: str) -> list[dict[str, Any]]:
    if not isinstance(table, dict):
        raise ReferenceError(f"{where}: expected a mapping")
    missing = [k for k in ("protocol", "backbone", "metrics", "rows") if not table.get(k)]
    if missing:
        raise ReferenceError(f"{where}: missing {', '.join(missing)}")
    metrics = table["metrics"]
    if not isinstance(metrics, dict) or any(d not in ("max", "min") for d in metrics.values()):
        raise ReferenceError(f"{where}: 'metrics' must map each metric name to max or min")
    out = []
    for row in table["rows"]:
        if not isinstance(row, dict) or not row.get("method") or not row.get("paper"):
            raise ReferenceError(f"{where}: every row needs 'method' and 'paper', got {row!r:.80}")
        unknown = set(row) - ROW_KEYS - set(metrics)
        if unknown:
            raise ReferenceError(f"{where}, {row['method']}: unknown keys {sorted(unknown)}; metrics are {sorted(metrics)}")
        for metric, direction in metrics.items():
            if metric not in row:
                continue  # not reported by that paper
            value, std, tag = _cell(row[metric], row.get("tag"), f"{where}, {row['method']}, {metric}")
            out.append({
                "protocol": str(table["protocol"]), "benchmark": str(table.get("benchmark", table["protocol"])),
                "backbone": str(row.get("backbone", table["backbone"])), "method": str(row["method"]),
                "metric": metric, "direction": direction, "value": value, "std": std, "tag": tag,
                "paper": str(row["paper"]), "source": str(table.get("source", "")), "note": str(row.get("note", "")),
                "file": filename,
            })  # fmt: skip
    return out


def _cell(cell: Any, row_tag: Any, where: str) -> tuple[float, float, str]:
    std, tag = math.nan, row_tag
    if isinstance(cell, dict):
        value, std, tag = cell.get("value"), cell.get("std", math.nan), cell.get("tag", row_tag)
    else:
        value = cell
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not isinstance(std, (int, float)):
        raise ReferenceError(f"{where}: value must be a number, got {value!r}")
    if tag not in TAGS:
        raise ReferenceError(f"{where}: verification tag {tag!r} is not one of {', '.join(TAGS)}")
    return float(value), float(std), str(tag)


def protocol_of(record: dict[str, Any]) -> str | None:
    """The published protocol a run reproduces: ``protocol`` in its record or in its scenario config.

    A ``--tiny`` run never matches a published protocol (it is a smoke test of the same code, not the benchmark).
    """
    if record.get("tiny"):
        return None
    scenario_cfg = (record.get("config") or {}).get("scenario") or {}
    protocol = record.get("protocol") or (scenario_cfg.get("protocol") if isinstance(scenario_cfg, dict) else None)
    return str(protocol) if protocol else None


def for_protocols(reference: pd.DataFrame, protocols) -> pd.DataFrame:
    """The published rows of these protocols, one row per (protocol, backbone, paper, method), one column per metric.

    A cell reads ``value`` or ``value ± std``; a cell whose verification tag differs from its row's tag says so.
    """
    wanted = {p for p in protocols if isinstance(p, str) and p}
    rows = reference[reference["protocol"].isin(wanted)]
    if rows.empty:
        return pd.DataFrame()
    keys = ["protocol", "benchmark", "backbone", "paper", "method"]
    row_tag = rows.groupby(keys, sort=False)["tag"].transform(lambda t: t.mode().iloc[0])
    cells = [_show(v, s, t, rt) for v, s, t, rt in zip(rows["value"], rows["std"], rows["tag"], row_tag)]
    shown = rows.assign(cell=cells, row_tag=row_tag)
    wide = shown.pivot_table(index=keys, columns="metric", values="cell", aggfunc="first", sort=False)
    meta = shown.groupby(keys, sort=False).agg(tag=("row_tag", "first"), note=("note", "first"), source=("source", "first"))
    metric_order = list(dict.fromkeys(rows["metric"]))
    return wide[metric_order].join(meta).reset_index().fillna("")


def _show(value: float, std: float, tag: str, row_tag: str) -> str:
    text = f"{value:g}" if math.isnan(std) else f"{value:g} ± {std:g}"
    return text if tag == row_tag else f"{text} [{tag}]"
