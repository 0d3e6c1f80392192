"""How many singular triplets each matrix freezes (``k``): the paper's adaptive rule and the official scripts' ones.

* ``adaptive`` (paper, §3 of Sculpting Subspaces): layer importance ``I = mean_i cos(X_i, W X_i)`` over tokens of the
  previous task's data, normalised so the mean over all target matrices is 1; retained fraction
  ``r = mrr + I_norm · (trr − mrr)`` (mrr 0.1, trr 0.8); ``k = floor(r · min(d_out, d_in))``. For a non-square ``W``
  the cosine compares the first ``m = min(d_out, d_in)`` coordinates of ``X`` and ``W X``, as the (commented-out)
  importance code of the official notebook does. The fraction is clipped to ``[mrr, 1]``; a non-positive mean
  importance (no meaningful normalisation) gives every matrix ``trr``.
* ``schedule`` (official T5 notebook ``run_finetuning.sh``): ``k = floor(max(d_out, d_in) · step · (t + 1))`` with
  ``step = 0.07``, so the frozen share grows by 7% of the larger side per task.
* ``fixed`` (mini_trainer / PEFT default): ``k = floor(ratio · min(d_out, d_in))`` with ``ratio = 0.5``.

Every rule caps ``k`` at ``min(d_out, d_in)`` (then the matrix is frozen whole) and floors it at 0.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping

import torch
import torch.nn.functional as F
from torch import nn

RULES = ("adaptive", "schedule", "fixed")


def _clamp(k: float, d: int) -> int:
    """``floor(k)`` within ``[0, d]``; the 1e-9 keeps float noise (0.1 + 0.7 = 0.7999...) from losing a rank."""
    return max(0, min(math.floor(k + 1e-9), d))


def adaptive_ranks(importance: Mapping[str, float], shapes: Mapping[str, tuple[int, int]], mrr: float = 0.1,
                   trr: float = 0.8) -> dict[str, int]:  # fmt: skip
    """``k`` per matrix from raw importance scores (normalised here to mean 1 over the matrices given).

    The retained fraction is clipped to ``[mrr, 1]``: mrr is the least any matrix keeps (a negative cosine would
    otherwise ask for less), 1 freezes the matrix whole. If the mean score is not positive, normalising by it is
    meaningless (random-init models give near-zero cosines of both signs): every matrix then gets ``trr``, the
    fraction a mean-importance matrix gets (see :func:`importance_is_degenerate`).
    """
    if not importance:
        return {}
    mean = sum(importance.values()) / len(importance)
    ranks = {}
    for name, score in importance.items():
        d = min(shapes[name])
        normalised = 1.0 if importance_is_degenerate(importance) else score / mean
        fraction = min(max(mrr + normalised * (trr - mrr), mrr), 1.0)
        ranks[name] = _clamp(fraction * d, d)
    return ranks


def importance_is_degenerate(importance: Mapping[str, float]) -> bool:
    """True when the mean importance is not positive, so the paper's normalisation cannot be applied."""
    return sum(importance.values()) / max(len(importance), 1) <= 1e-8


def schedule_ranks(shapes: Mapping[str, tuple[int, int]], task_index: int, step: float = 0.07) -> dict[str, int]:
    """The official notebook's growing fraction of the larger side, capped at full rank."""
    return {name: _clamp(max(shape) * step * (task_index + 1), min(shape)) for name, shape in shapes.items()}


def fixed_ranks(shapes: Mapping[str, tuple[int, int]], ratio: float = 0.5) -> dict[str, int]:
    """A fixed fraction of the smaller side (mini_trainer's and PEFT's default 0.5)."""
    return {name: _clamp(min(shape) * ratio, min(shape)) for name, shape in shapes.items()}


@torch.no_grad()
def layer_importance(modules: Mapping[str, nn.Linear], run_batches: Callable[[], Iterable[object]]) -> dict[str, float]:
    """Mean cosine similarity between each linear layer's input and ``W x`` (bias excluded) over all tokens.

    ``run_batches`` drives the model forward (e.g. a few loss computations on the previous task's data); forward
    hooks on ``modules`` accumulate the similarity per token, so no activation is stored.
    """
    sums = dict.fromkeys(modules, 0.0)
    counts = dict.fromkeys(modules, 0)

    def hook_for(name: str):
        def hook(module: nn.Linear, inputs, _output) -> None:
            x = inputs[0].detach().reshape(-1, module.in_features).float()
            m = min(module.weight.shape)
            y = x @ module.weight.detach()[:m].float().T
            cos = F.cosine_similarity(x[:, :m], y, dim=-1, eps=1e-8)
            sums[name] += float(cos.sum())
            counts[name] += cos.numel()

        return hook

    handles = [module.register_forward_hook(hook_for(name)) for name, module in modules.items()]
    try:
        for _ in run_batches():
            pass
    finally:
        for handle in handles:
            handle.remove()
    missing = [name for name, n in counts.items() if n == 0]
    if missing:
        raise ValueError(f"the importance scan never reached {len(missing)} target layer(s), e.g. {missing[0]!r}; "
                         "choose targets the model's loss uses, or strategy.rank_rule=fixed")  # fmt: skip
    return {name: sums[name] / counts[name] for name in modules}
