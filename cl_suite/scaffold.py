"""``cl-suite new-strategy NAME``: write a working strategy plugin to start from, its test and a CI workflow.

The skeleton is a real, small method (an L2 pull towards the weights at the end of the previous task, the "L2"
baseline of Kirkpatrick et al. 2017) so it shows the hooks a method uses and the state rules a plugin follows,
and passes the conformance checks (``cl-suite check``, :mod:`cl_suite.testing`). Beside the plugin's folder go a
pytest file that runs those checks and a GitHub Actions workflow that runs ``cl-suite check`` on every push.
"""

from __future__ import annotations

import re
from pathlib import Path

TEMPLATE = '''"""{name}: TODO one paragraph on the method, its paper and what you simplified.

Started from `cl-suite new-strategy`: an L2 pull towards the weights at the end of the previous task
(the "L2" baseline of Kirkpatrick et al. 2017). Replace it with your method.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from cl_suite.api import Strategy, Task


@dataclass
class {cls}Config:
    l2_weight: float = 1.0  # strength of the pull towards the previous task's weights


class {cls}(Strategy):
    """TODO: one line for `cl-suite list`."""

    supports = frozenset({{"cil", "til", "dil", "fscil", "seg", "instr"}})
    Config = {cls}Config

    def setup(self, model, ctx) -> None:
        super().setup(model, ctx)
        # State that must survive --resume lives in buffers (part of the state dict), created here with fixed shapes.
        self.names = [n for n, p in model.named_parameters() if p.requires_grad]
        for n, p in model.named_parameters():
            if p.requires_grad:
                self.register_buffer("anchor__" + n.replace(".", "__"), torch.zeros_like(p))
        self.register_buffer("has_anchor", torch.tensor(False))

    def training_step(self, batch, task: Task) -> torch.Tensor:
        loss = self.model.loss(batch, task)
        if not bool(self.has_anchor):
            return loss
        params = dict(self.model.named_parameters())
        penalty = sum(((params[n] - self.get_buffer("anchor__" + n.replace(".", "__"))) ** 2).sum() for n in self.names)
        return loss + self.config.l2_weight * penalty

    def after_task(self, task: Task) -> None:
        params = dict(self.model.named_parameters())
        for n in self.names:
            self.get_buffer("anchor__" + n.replace(".", "__")).copy_(params[n].detach())
        self.has_anchor.fill_(True)
'''


TEST_TEMPLATE = '''"""Conformance checks of {name}: the checks `cl-suite check` runs (cl_suite.testing), on every compatible tiny scenario."""

from cl_suite.testing import conformance_tests

test_conformance = conformance_tests("{ref}")
'''

WORKFLOW_TEMPLATE = """# Conformance checks of {name} on every push (written by `cl-suite new-strategy`).
# It installs this package with the constraints file (keep the one cl-suite ships: it pins a CPU torch; a plugin
# package of its own lists cl-suite in its dependencies) and runs `cl-suite check`, then the plugin's tests.
name: cl-suite check
on: [push, pull_request]
jobs:
  conformance:
    runs-on: ubuntu-latest
    timeout-minutes: 30
    env:
      OMP_NUM_THREADS: "1"
      PIP_EXTRA_INDEX_URL: https://download.pytorch.org/whl/cpu  # torch's CPU wheels
    steps:
      - uses: actions/checkout@v4
      - uses: actions/setup-python@v5
        with:
          python-version: "3.11"
      - name: Install with the constraints file
        run: python -m pip install -c constraints.txt -e . pytest
      - name: cl-suite check
        run: cl-suite check {ref}
      - name: Plugin tests
        run: python -m pytest -q {test}
"""


def write_strategy(name: str, folder: Path) -> tuple[Path, str]:
    """Write ``folder/<module>.py`` for plugin ``name``; returns the path and the class name."""
    if not re.fullmatch(r"[a-z][a-z0-9]*(-[a-z0-9]+)*", name):
        raise ValueError(f"strategy name {name!r} must be lower-case words joined by dashes, e.g. my-method")
    module = name.replace("-", "_")
    cls = "".join(part.capitalize() for part in name.split("-"))
    path = folder / f"{module}.py"
    if path.exists():
        raise FileExistsError(f"{path} already exists; choose another name or --dir")
    folder.mkdir(parents=True, exist_ok=True)
    path.write_text(TEMPLATE.format(name=name, cls=cls))
    return path, cls


def write_checks(name: str, ref: str, project: Path) -> list[tuple[Path, bool]]:
    """Write ``project/tests/test_<module>.py`` (the conformance checks of ``ref`` under pytest) and
    ``project/.github/workflows/cl-suite-check.yml``; an existing file is kept. Returns (path, written) pairs."""
    module = name.replace("-", "_")
    test = project / "tests" / f"test_{module}.py"
    workflow = project / ".github" / "workflows" / "cl-suite-check.yml"
    contents = {test: TEST_TEMPLATE.format(name=name, ref=ref),
                workflow: WORKFLOW_TEMPLATE.format(name=name, ref=ref, test=test.relative_to(project).as_posix())}  # fmt: skip
    written = []
    for path, text in contents.items():
        fresh = not path.exists()
        if fresh:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        written.append((path, fresh))
    return written
