"""CoSO's per-layer memory: the historical basis M and the task's Frequent Directions sketch.

Cheng et al., "Continuous Subspace Optimization for Continual Learning" (NeurIPS 2025); behaviour read in the official
code (quinn-ch/CoSO ``coso/coso_projector.py``) and in reference/strategies.md §4 and §9.4. Written from those
descriptions, not copied.

Everything lives on the **left** (output, dimension 0) side of the ``nn.Linear`` weight gradient ``G`` (out × in),
whatever the shape. During a task the optimizer removes the component of ``G`` in ``M`` and hands every SVD it takes
to :meth:`HistoricalSubspace.sketch` (the official ``DoubleSVD``): a variant of Frequent Directions that first shrinks
the gradient by its own (r2+1)-th singular value, then stacks it beside ``decay · B`` and shrinks again. At the task
boundary :meth:`HistoricalSubspace.close_task` keeps the sketch directions whose cumulative energy is *strictly
below* ε (one fewer than "the smallest k reaching ε"; possibly 0) and appends them to ``M`` without
re-orthonormalisation or a size cap, then forgets the sketch.
"""

from __future__ import annotations

import torch


def shrink(u: torch.Tensor, s: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The FD shrinkage of an SVD: ``(U[:, :rank], sqrt(max(σ² − σ²_{rank+1}, 0))[:rank])``.

    Needs at least ``rank + 1`` singular values (the (rank+1)-th is the shrinkage)."""
    if s.numel() <= rank:
        raise ValueError(f"the sketch rank {rank} needs more than {rank} singular values, got {s.numel()}")
    head = s[: rank + 1]
    shrunk = (head.square() - head[rank].square()).clamp_min(0).sqrt()
    return u[:, :rank], shrunk[:rank]


class HistoricalSubspace:
    """The orthonormal historical basis ``M`` (out × k) of one weight, and the current task's FD sketch.

    Args:
        dim: the weight's output dimension (rows of ``M``).
        sketch_rank: r2, the number of directions the sketch keeps.
        decay: the factor on the old sketch at each merge (1.0 in every official config).
    """

    def __init__(self, dim: int, sketch_rank: int, decay: float = 1.0, *, device=None, dtype=torch.float32) -> None:
        if not 1 <= sketch_rank < dim:
            raise ValueError(f"sketch rank must be in 1..{dim - 1} (below the layer's output size {dim}), got {sketch_rank}")
        self.dim, self.sketch_rank, self.decay = dim, sketch_rank, decay
        self.basis = torch.zeros(dim, 0, device=device, dtype=dtype)
        self.sketch_u: torch.Tensor | None = None  # (dim, r2) left singular vectors of the sketch
        self.sketch_sigma: torch.Tensor | None = None  # (r2,) its shrunk singular values

    @property
    def size(self) -> int:
        """How many historical directions ``M`` holds."""
        return int(self.basis.shape[1])

    def remove(self, grad: torch.Tensor) -> torch.Tensor:
        """``G − M Mᵀ G``: the gradient without its component in the historical subspace."""
        if self.size == 0:
            return grad
        m = self.basis.to(grad.dtype)
        return grad - m @ (m.T @ grad)

    def sketch(self, u: torch.Tensor, s: torch.Tensor) -> None:
        """Merge one gradient's SVD (``U``, ``σ``, already without its M component) into the task's sketch."""
        u_new, s_new = shrink(u, s, self.sketch_rank)
        if self.sketch_u is None:
            self.sketch_u, self.sketch_sigma = u_new, s_new
            return
        merged = torch.cat([self.decay * self.sketch_u * self.sketch_sigma, u_new * s_new], dim=1)
        mu, ms, _ = torch.linalg.svd(merged, full_matrices=False)
        self.sketch_u, self.sketch_sigma = shrink(mu, ms, self.sketch_rank)

    def boundary_rank(self, threshold: float) -> int:
        """k = #{i : cumsum(σ²)_i / Σσ² < ε} on the shrunk sketch values (0 without a sketch or energy)."""
        if self.sketch_sigma is None:
            return 0
        energy = self.sketch_sigma.double().square()
        total = energy.sum()
        if total <= 0:
            return 0
        return int((torch.cumsum(energy / total, 0) < threshold).sum())

    def close_task(self, threshold: float) -> int:
        """Append the sketch's top-k directions to ``M`` (k from :meth:`boundary_rank`), reset the sketch; return k."""
        k = self.boundary_rank(threshold)
        if k:
            self.basis = torch.cat([self.basis, self.sketch_u[:, :k].to(self.basis.dtype)], dim=1)
        self.sketch_u = self.sketch_sigma = None
        return k
