"""DualGPM: the per-layer basis of the input space earlier tasks used, as InfLoRA's official code keeps it.

Transcribed item by item from ``update_DualGPM`` and the projection in ``_train`` of ``methods/inflora.py`` in
liangyanshuo/InfLoRA at commit e08b00edd54f2f10cf2f9826eae7d44fdcb6354b (read, not copied). Each layer holds an
orthonormal basis ``M`` (d × k) and a type:

* ``remove``: ``M`` spans the protected (old-task) input space; a new task's covariance is projected with
  ``C − M Mᵀ C``.
* ``retain``: ``M`` spans the complement of the protected space (kept when the protected space exceeds d/2, so the
  basis stays small); the projection is ``M Mᵀ C``.

``update(activation, threshold)`` takes the layer's input covariance ``E[x xᵀ]`` (d × d) after a task and grows the
protected space by the energy criterion of GPM on the squared singular values of that matrix (as the official code
does: ``S**2`` of the covariance), then switches a ``remove`` basis wider than d/2 to its complement. The threshold is
``lamb + (lame − lamb) · t / T`` (:func:`threshold`).

Difference from the official code: after the first task, a layer whose kept rank is ≥ d/2 is marked ``retain`` there
but keeps the protected basis itself (and the official summary then fails its own ``assert``); here it stores the
complement, which is what ``retain`` means everywhere else in that code. SVDs run in float64 (official: float32).
"""

from __future__ import annotations

import torch


def threshold(task_index: int, num_tasks: int, lamb: float, lame: float) -> float:
    """The official threshold schedule: ``(lame − lamb) · t / T + lamb`` with t the 0-based task index."""
    return (lame - lamb) * task_index / num_tasks + lamb


class DualGPM:
    """One layer's protected input space (see the module docstring)."""

    def __init__(self, basis: torch.Tensor | None = None, kind: str = "remove") -> None:
        if kind not in ("remove", "retain"):
            raise ValueError(f"DualGPM kind must be remove or retain, got {kind!r}")
        self.basis, self.kind = basis, kind

    @property
    def size(self) -> int:
        """Columns of the stored basis (0 before the first update)."""
        return 0 if self.basis is None else int(self.basis.shape[1])

    @property
    def protected(self) -> int:
        """Dimension of the protected (old-task) input space."""
        if self.basis is None:
            return 0
        return self.size if self.kind == "remove" else int(self.basis.shape[0]) - self.size

    def project(self, cov: torch.Tensor) -> torch.Tensor:
        """A new task's covariance with the protected space removed (official ``_train``, before the SVD)."""
        if self.basis is None:
            return cov
        m = self.basis.to(cov)
        return cov - m @ (m.t() @ cov) if self.kind == "remove" else m @ (m.t() @ cov)

    def protected_projector(self) -> torch.Tensor | None:
        """``P`` with ``P x`` the component of ``x`` in the protected space (None before the first update)."""
        if self.basis is None:
            return None
        m = self.basis
        p = m @ m.t()
        return p if self.kind == "remove" else torch.eye(m.shape[0], dtype=m.dtype, device=m.device) - p

    @torch.no_grad()
    def update(self, activation: torch.Tensor, thresh: float) -> int:
        """Grow the protected space from this task's covariance; returns the number of directions it changed by."""
        act = activation.to(torch.float64)
        d = act.shape[0]
        if self.basis is None:
            u, s, _ = torch.linalg.svd(act, full_matrices=False)
            ratio = s**2 / (s**2).sum()
            r = int((torch.cumsum(ratio, 0) < thresh).sum())
            kept = u[:, : max(r, 1)]
            if r < d / 2:
                self.basis, self.kind = kept, "remove"
            else:  # see the module docstring: store the complement, as 'retain' means elsewhere
                full = torch.linalg.svd(kept)[0]
                self.basis, self.kind = full[:, kept.shape[1] :], "retain"
            self._summarise()
            return max(r, 1)
        m = self.basis.to(act)
        total = float((torch.linalg.svdvals(act) ** 2).sum())
        if self.kind == "remove":
            u, s, _ = torch.linalg.svd(act - m @ (m.t() @ act), full_matrices=False)
            ratio = (s**2 / total).tolist()
            accumulated = (total - float((s**2).sum())) / total
            r = 0
            for value in ratio:
                if accumulated >= thresh:
                    break
                accumulated += value
                r += 1
            if r:
                grown = torch.cat([m, u[:, :r]], 1)
                self.basis = grown[:, :d]
        else:
            u, s, _ = torch.linalg.svd(m @ (m.t() @ act), full_matrices=False)
            ratio = (s**2 / total).tolist()
            accumulated = float((s**2).sum()) / total
            r = 0
            for value in ratio:
                if accumulated < 1 - thresh:
                    break
                accumulated -= value
                r += 1
            if r:
                feature = m - u[:, :r] @ (u[:, :r].t() @ m)
                full = torch.linalg.svd(feature)[0]
                self.basis = full[:, : m.shape[1] - r]  # python slicing, as the official numpy code
        self._summarise()
        return r

    def _summarise(self) -> None:
        """The official 'Gradient Constraints Summary': a remove basis wider than d/2 becomes its complement."""
        d = self.basis.shape[0]
        if self.kind == "remove" and self.basis.shape[1] > d / 2:
            full = torch.linalg.svd(self.basis)[0]
            self.basis, self.kind = full[:, self.basis.shape[1] :], "retain"
