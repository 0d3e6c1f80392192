"""The core never imports the plugin packages or the app (DESIGN.md §2), checked on the source with ast."""

from __future__ import annotations

import ast
from pathlib import Path

CORE = Path(__file__).resolve().parent.parent / "cl_suite"
FORBIDDEN = ("strategies", "scenarios", "app")


def imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_core_does_not_import_plugins_or_app():
    offenders = {
        str(path.relative_to(CORE.parent)): sorted(m for m in imported_modules(path) if m.split(".")[0] in FORBIDDEN)
        for path in CORE.rglob("*.py")
    }
    offenders = {k: v for k, v in offenders.items() if v}
    assert not offenders, f"cl_suite/ must not import {FORBIDDEN}: {offenders}"


def test_the_check_sees_imports(tmp_path):
    sample = tmp_path / "x.py"
    sample.write_text("import os\nfrom strategies.lora import Lora\nimport scenarios.digits as d\n")
    assert {"strategies.lora", "scenarios.digits"} <= imported_modules(sample)
