"""Plugin discovery: entry points (lazy, cached) and ``module:Class`` references.

Built-in strategies and scenarios register through the same entry-point groups as third-party packages, so
the built-ins prove the plugin door works. Listing never imports a plugin module: descriptions and
supported settings are read from the plugin's source with ``ast`` (see :func:`describe`).
"""

from __future__ import annotations

import ast
import difflib
import functools
import importlib
import importlib.metadata
import importlib.util
import os
import re
import sys
from dataclasses import dataclass

GROUPS = {"strategy": "cl_suite.strategies", "scenario": "cl_suite.scenarios"}
_PLURAL = {"strategy": "strategies", "scenario": "scenarios"}
_REF = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*")


class RegistryError(LookupError):
    """A plugin name that is unknown, ambiguous or does not resolve to the right kind of class."""


@dataclass(frozen=True)
class PluginInfo:
    """What ``cl-suite list`` shows, read without importing the plugin."""

    name: str
    ref: str  # "module:Class"
    description: str
    settings: tuple[str, ...]  # strategies: supported settings; scenarios: (setting,)


@functools.cache
def entry_points(kind: str) -> dict[str, str]:
    """Name -> "module:Class" for one kind. A name claimed by two different targets is an error."""
    group = _group(kind)
    found: dict[str, str] = {}
    for ep in importlib.metadata.entry_points(group=group):
        if ep.name in found and found[ep.name] != ep.value:
            raise RegistryError(
                f"{kind} name {ep.name!r} is claimed twice: by {found[ep.name]} and by {ep.value}; "
                "uninstall or rename one of them"
            )
        found[ep.name] = ep.value
    return dict(sorted(found.items()))


def names(kind: str) -> list[str]:
    return list(entry_points(kind))


def resolve_ref(kind: str, name: str) -> str:
    """The "module:Class" behind a registered name or a reference the user typed."""
    if ":" in name:
        if not _REF.fullmatch(name):
            raise RegistryError(f"{kind} {name!r} is not a module:Class reference (e.g. strategies.my_method:MyMethod)")
        return name
    known = entry_points(kind)
    if name in known:
        return known[name]
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
    hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    raise RegistryError(f"unknown {kind} {name!r}.{hint} Known {_PLURAL[kind]}: {', '.join(known) or '(none installed)'}")


def is_installed(kind: str, name: str) -> bool:
    """Whether ``name`` is a registered name, or a ``module:Class`` that an installed entry point names."""
    known = entry_points(kind)
    return name in known or name in known.values()


def load(kind: str, name: str, typed: bool = True) -> type:
    """Import and return the class for ``name`` (a registered name or ``module:Class``), checking its base.

    ``typed``: the name was typed by the user (command line, Python call). A ``module:Class`` read from a file (a
    run folder's config.yaml, a config someone handed over) imports code, so it is refused unless an installed
    entry point names it; the working folder joins the import path only for a typed reference."""
    from cl_suite import api

    ref = resolve_ref(kind, name)
    module_name, _, attr = ref.partition(":")
    if ":" in name and not typed and not is_installed(kind, name):
        raise RegistryError(f"{kind} {name!r} comes from a config file and is not an installed plugin; importing it "
                            f"would run its code. Type it with --{kind} if you trust it, or pass --allow-config-refs")
    if ":" in name and typed and os.getcwd() not in sys.path:
        sys.path.append(os.getcwd())  # a typed module:Class may live in the working folder, as with `python -m`
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise RegistryError(f"cannot import {kind} {name!r} from {ref}: {e}") from e
    except Exception as e:  # the plugin module itself failed while importing
        raise RegistryError(f"importing {kind} {name!r} from {ref} failed: {type(e).__name__}: {e}") from e
    cls = getattr(module, attr, None)
    if cls is None:
        raise RegistryError(f"{kind} {name!r}: module {module_name} has no attribute {attr!r}")
    base = api.Strategy if kind == "strategy" else api.Scenario
    if not (isinstance(cls, type) and issubclass(cls, base)):
        raise RegistryError(f"{kind} {name!r} ({ref}) is not a subclass of cl_suite.api.{base.__name__}")
    return cls


def describe(kind: str, name: str) -> PluginInfo:
    """Description and settings read from the plugin's source (class docstring, ``supports``/``setting``)."""
    ref = resolve_ref(kind, name)
    module_name, _, attr = ref.partition(":")
    from cl_suite.api import SETTINGS

    default_settings = SETTINGS if kind == "strategy" else ("?",)
    info = PluginInfo(name, ref, "", default_settings)
    classes, _ = _module_classes(module_name)
    if attr not in classes:
        return info
    doc = (ast.get_docstring(classes[attr]) or "").strip().splitlines()
    value = _inherited_literal(module_name, attr, "supports" if kind == "strategy" else "setting")
    settings = default_settings if value is None else (value,) if isinstance(value, str) else tuple(sorted(value))
    return PluginInfo(name, ref, doc[0] if doc else "", settings)


def _inherited_literal(module_name: str, name: str, target: str, depth: int = 0):
    """``target``'s literal in class ``name`` of ``module_name`` or, failing that, in its base classes: those defined
    in the same module and those it imports by ``from package.module import Base`` (read, never imported)."""
    classes, imports = _module_classes(module_name)
    node = classes.get(name)
    if node is None or depth > 10:
        return None
    for stmt in node.body:
        value = _class_literal(stmt, target)
        if value is not None:
            return value
    for base in node.bases:
        if isinstance(base, ast.Name):
            origin = module_name if base.id in classes else imports.get(base.id)
            value = None if origin is None else _inherited_literal(origin, base.id, target, depth + 1)
            if value is not None:
                return value
    return None


def _module_classes(module_name: str) -> tuple[dict[str, ast.ClassDef], dict[str, str]]:
    """The top-level classes of a module's source, and the module each ``from X import Name`` name comes from."""
    source = _module_source(module_name)
    if source is None:
        return {}, {}
    body = ast.parse(source).body
    classes = {node.name: node for node in body if isinstance(node, ast.ClassDef)}
    imports = {alias.asname or alias.name: node.module for node in body
               if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 for alias in node.names}  # fmt: skip
    return classes, imports


def _group(kind: str) -> str:
    if kind not in GROUPS:
        raise ValueError(f"kind must be one of {sorted(GROUPS)}, not {kind!r}")
    return GROUPS[kind]


def _module_source(module_name: str) -> str | None:
    try:
        spec = importlib.util.find_spec(module_name)  # imports parent packages only, not the module
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        return None
    with open(spec.origin, encoding="utf-8") as f:
        return f.read()


def _class_literal(stmt: ast.stmt, target: str):
    """The literal value of ``target = ...`` / ``target: T = ...`` in a class body, else None."""
    if (isinstance(stmt, ast.Assign) and any(isinstance(t, ast.Name) and t.id == target for t in stmt.targets)) or (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name) and stmt.target.id == target):
        value = stmt.value
    else:
        return None
    if isinstance(value, ast.Call) and not value.keywords and len(value.args) == 1:  # frozenset({...})
        value = value.args[0]
    try:
        return ast.literal_eval(value)
    except (ValueError, TypeError, SyntaxError):
        return None
