"""Protocol data of the full-scale CLIP scenarios, transcribed from the official code (each file's ``_source`` names
the repository, path and commit): ``mtil_zscl``, ``xtail_rail``, ``cifar100_zscl_cil``, ``imagenet_r``."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

PROTOCOL_DIR = Path(__file__).parent


@cache
def load(name: str) -> dict:
    """The shipped protocol ``name`` (read-only: callers must not mutate it)."""
    return json.loads((PROTOCOL_DIR / f"{name}.json").read_text(encoding="utf-8"))


def sources(name: str) -> list[dict]:
    return [dict(s) for s in load(name)["_source"]]
