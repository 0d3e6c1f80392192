"""The incremental sessions' optimiser: SGD under mmcls' CosineAnnealingCooldown schedule with linear warmup.

Values from ``mmfscil/apis/fscil.py`` of xiaojieli0903/Mamba-FSCIL @ f253969ac3ea32a71cd3bfc242907ad69b1b0b9d
(per session: SGD momentum 0.9, weight decay 5e-4; schedule min_lr_ratio 1e-2, cool_down_ratio 0.1,
cool_down_time 5, linear warmup over 5 iterations from ratio 0.1, by iteration) and the formulas of its
``mmcls/core/hook/lr_updater.py`` and mmcv's linear warmup. The official loop advances the iteration counter before
setting the learning rate, so the first step uses iteration 1.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch

MOMENTUM, WEIGHT_DECAY = 0.9, 5e-4
MIN_LR_RATIO, COOL_DOWN_RATIO, COOL_DOWN_TIME = 1e-2, 0.1, 5
WARMUP_ITERS, WARMUP_RATIO = 5, 0.1


def lr_factor(iteration: int, total: int) -> float:
    """Multiplier of the base learning rate at ``iteration`` (1-based) of ``total``."""
    if iteration > total - COOL_DOWN_TIME:
        regular = MIN_LR_RATIO * COOL_DOWN_RATIO
    else:
        progress = iteration / (total - COOL_DOWN_TIME)
        regular = MIN_LR_RATIO + 0.5 * (1 - MIN_LR_RATIO) * (math.cos(math.pi * progress) + 1)
    if iteration < WARMUP_ITERS:
        regular *= 1 - (1 - iteration / WARMUP_ITERS) * (1 - WARMUP_RATIO)
    return regular


class CooldownSGD(torch.optim.SGD):
    """SGD whose every step scales each group's learning rate by :func:`lr_factor` (on top of whatever the runner's
    own scheduler set, which is a constant 1 unless ``train.scheduler`` or ``train.warmup_steps`` say otherwise)."""

    def __init__(self, groups: Iterable[dict], lr: float, total_steps: int) -> None:
        super().__init__(list(groups), lr=lr, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)
        self.total_steps, self.iteration = total_steps, 0

    def step(self, closure=None):  # type: ignore[override]
        self.iteration += 1
        factor = lr_factor(self.iteration, self.total_steps)
        saved = [group["lr"] for group in self.param_groups]
        for group in self.param_groups:
            group["lr"] = group["lr"] * factor
        try:
            return super().step(closure)
        finally:
            for group, lr in zip(self.param_groups, saved):
                group["lr"] = lr
