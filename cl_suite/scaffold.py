"""``cl-suite new-strategy NAME``: write a working strategy plugin to start from.

The skeleton is a real, small method (an L2 pull towards the weights at the end of the previous task, the "L2"
baseline of Kirkpatrick et al. 2017) so it shows the hooks a method uses and the state rules a plugin follows,
and passes the conformance tests once registered.
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
