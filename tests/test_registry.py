"""Plugin discovery: entry points, module:Class refs, did-you-mean, duplicates, and listing without imports."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys

import pytest

from cl_suite import registry
from cl_suite.api import Scenario, Strategy
from cl_suite.registry import RegistryError


def test_builtins_are_entry_points():
    assert {"finetune", "joint", "zero-shot"} <= set(registry.names("strategy"))
    assert "digits-tiny" in registry.names("scenario")
    assert issubclass(registry.load("strategy", "finetune"), Strategy)
    assert issubclass(registry.load("scenario", "digits-tiny"), Scenario)


def test_unknown_name_suggests_and_lists():
    with pytest.raises(RegistryError, match=r"Did you mean 'finetune'.*Known strategies: .*finetune"):
        registry.load("strategy", "fintune")
    with pytest.raises(RegistryError, match=r"Known scenarios: .*digits-tiny"):
        registry.load("scenario", "nope")


def test_module_class_refs_and_base_class_check():
    assert registry.load("strategy", "strategies.joint:Joint").__name__ == "Joint"
    with pytest.raises(RegistryError, match=r"not a subclass of cl_suite\.api\.Strategy"):
        registry.load("strategy", "scenarios.digits:DigitsTiny")
    with pytest.raises(RegistryError, match="cannot import"):
        registry.load("strategy", "no_such_module:Thing")
    with pytest.raises(RegistryError, match="has no attribute"):
        registry.load("strategy", "strategies.joint:Nope")


def test_a_name_claimed_twice_is_an_error(monkeypatch):
    eps = [importlib.metadata.EntryPoint("dup", "a.mod:A", "cl_suite.strategies"),
           importlib.metadata.EntryPoint("dup", "b.mod:B", "cl_suite.strategies")]  # fmt: skip
    monkeypatch.setattr(importlib.metadata, "entry_points", lambda group: eps)
    registry.entry_points.cache_clear()
    try:
        with pytest.raises(RegistryError, match=r"claimed twice: by a\.mod:A and by b\.mod:B"):
            registry.names("strategy")
    finally:
        registry.entry_points.cache_clear()


def test_describe_reads_source_without_importing():
    info = registry.describe("strategy", "zero-shot")
    assert info.description.startswith("No training")
    assert "cil" in info.settings
    assert registry.describe("scenario", "digits-tiny").settings == ("cil",)


def test_cli_list_imports_no_plugin_module():
    code = (
        "import sys, io, contextlib\n"
        "from cl_suite import cli, registry\n"
        "with contextlib.redirect_stdout(io.StringIO()) as out:\n"
        "    cli.main(['list'])\n"
        "plugins = [m for n in registry.GROUPS for ref in registry.entry_points(n).values()\n"
        "           for m in [ref.partition(':')[0]] if m in sys.modules]\n"
        "assert 'digits-tiny' in out.getvalue() and 'finetune' in out.getvalue(), out.getvalue()\n"
        "print('imported:', plugins)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "imported: []"


def test_describe_follows_base_classes_in_the_same_module(tmp_path, monkeypatch):
    (tmp_path / "described_plugins.py").write_text(
        "from cl_suite.api import Scenario\n"
        "class Base(Scenario):\n    setting = 'seg'\n"
        "class Child(Base):\n    '''A child scenario.'''\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    info = registry.describe("scenario", "described_plugins:Child")
    assert (info.description, info.settings) == ("A child scenario.", ("seg",))


def test_describe_follows_base_classes_imported_from_another_module(tmp_path, monkeypatch):
    (tmp_path / "described_base.py").write_text(
        "from cl_suite.api import Strategy\n"
        "class Base(Strategy):\n    supports = frozenset({'til', 'dil'})\n"
    )
    (tmp_path / "described_child.py").write_text(
        "from described_base import Base\nclass Child(Base):\n    '''A child strategy.'''\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    info = registry.describe("strategy", "described_child:Child")
    assert (info.description, info.settings) == ("A child strategy.", ("dil", "til"))
    assert "described_base" not in sys.modules and "described_child" not in sys.modules  # read, not imported
    assert registry.describe("strategy", "avalanche-ewc").settings == ("cil", "dil", "fscil", "til")
