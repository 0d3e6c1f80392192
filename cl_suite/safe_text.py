"""Text from run records on its way out: to a terminal (no control characters), into CSV (no spreadsheet formulas).

A results folder can come from someone else, so its strings are data, never terminal escapes or formulas.
LaTeX specials are escaped by pandas' ``to_latex(escape=True)``; :func:`latex` is the same rule for one string.
"""

from __future__ import annotations

import re

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")  # C0 (tab and newline kept), DEL, C1 (\x9b is a CSI)
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_LATEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
          "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}  # fmt: skip


def terminal(text: object) -> str:
    """``text`` with every control character but tab and newline shown as an escape (``\\x1b``), never sent raw."""
    return _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), str(text))


def one_line(text: object) -> str:
    """:func:`terminal`, with newlines and tabs escaped too: for a value printed inside one line."""
    return terminal(text).replace("\n", "\\n").replace("\t", "\\t")


def csv_cell(value: object) -> object:
    """A string a spreadsheet would read as a formula gets a leading apostrophe (OWASP's advice); numbers stay."""
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def latex(text: object) -> str:
    return "".join(_LATEX.get(c, c) for c in terminal(text))
