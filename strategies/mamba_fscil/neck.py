"""Mamba-FSCIL's dual selective-SSM projector (the ``MambaNeck``, ``version='ssm'``) on a grid of feature tokens.

Transcribed from ``mmfscil/models/mamba_ffn_neck.py`` of xiaojieli0903/Mamba-FSCIL @
f253969ac3ea32a71cd3bfc242907ad69b1b0b9d:

- each branch: an MLP projection of every grid position (1x1 conv in -> mid, LayerNorm over (mid, H, W),
  LeakyReLU(0.1), [a second mid -> mid layer when ``num_layers=3``], 1x1 conv mid -> out without bias), plus a
  learned positional embedding (truncated normal, std 0.02), then one :class:`SelectiveSSM` scanned in four
  directions over the grid (row-major, row-major reversed, column-major, column-major reversed) with shared
  weights; the four outputs (and the four gates z) are summed back in row-major order, and the output is averaged
  over positions;
- the identity: the position-averaged input (or a bias-free linear map of it, ``use_residual_proj``);
- base session: ``out = base + identity``; the gate z of the base branch is returned as ``main``;
- incremental sessions: a second, new branch reads the detached input, its z rows of ``in_proj`` start at zero so
  it adds nothing at first; ``out = base.detach() + identity.detach() + new`` (``detach_residual``) or the same
  without detaching; ``main`` is the new branch's summed gate z, which the suppression losses act on;
- the scan parameters dt, B, C of the first (row-major) direction of each branch feed the separation losses.

Differences: positions are tokens of shape (batch, H*W, C) instead of an NCHW map (the 1x1 convolutions are
linears, the LayerNorm's affine is per (position, channel) as the [C, H, W] LayerNorm's is); the ``ss2d`` version
(CUB) is not implemented.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from strategies.mamba_fscil.ssm import SelectiveSSM


def _mlp(in_dim: int, mid: int, out_dim: int, positions: int, num_layers: int) -> nn.Sequential:
    if num_layers not in (2, 3):
        raise ValueError(f"num_layers must be 2 or 3, got {num_layers}")
    layers: list[nn.Module] = [nn.Linear(in_dim, mid), nn.LayerNorm((positions, mid)), nn.LeakyReLU(0.1)]
    if num_layers == 3:
        layers += [nn.Linear(mid, mid), nn.LayerNorm((positions, mid)), nn.LeakyReLU(0.1)]
    layers.append(nn.Linear(mid, out_dim, bias=False))
    return nn.Sequential(*layers)


@dataclass(frozen=True)
class NeckShape:
    """Everything needed to rebuild the neck (kept in the strategy's extra state for --resume)."""

    in_dim: int  # token width
    pooled_dim: int  # width of the pooled identity
    out_dim: int
    height: int
    width: int
    mid: int
    d_state: int
    dt_rank: int
    expand: float
    num_layers: int
    num_layers_new: int
    use_residual_proj: bool
    chunk: int


class Branch(nn.Module):
    """MLP projection + positional embedding + a selective SSM scanned in four directions."""

    def __init__(self, s: NeckShape, num_layers: int) -> None:
        super().__init__()
        self.height, self.width = s.height, s.width
        positions = s.height * s.width
        self.mlp_proj = _mlp(s.in_dim, s.mid, s.out_dim, positions, num_layers)
        self.pos_embed = nn.Parameter(nn.init.trunc_normal_(torch.zeros(1, positions, s.out_dim), std=0.02))
        self.block = SelectiveSSM(s.out_dim, s.d_state, s.dt_rank, s.expand, s.chunk)

    def _to_columns(self, t: torch.Tensor, dim: int) -> torch.Tensor:
        """Reorder positions from row-major to column-major along ``dim`` (its inverse is _to_rows)."""
        shape = list(t.shape)
        grid = t.reshape(*shape[:dim], self.height, self.width, *shape[dim + 1 :])
        return grid.transpose(dim, dim + 1).reshape(shape)

    def _to_rows(self, t: torch.Tensor, dim: int) -> torch.Tensor:
        shape = list(t.shape)
        grid = t.reshape(*shape[:dim], self.width, self.height, *shape[dim + 1 :])
        return grid.transpose(dim, dim + 1).reshape(shape)

    def forward(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, ...]]:
        """tokens (b, H*W, in) -> pooled output (b, out), summed gate z (b, d_inner, H*W), params of direction 1."""
        x = self.mlp_proj(tokens) + self.pos_embed
        y_h, z_h, params = self.block(x)
        y_hf, z_hf, _ = self.block(x.flip(1))
        cols = self._to_columns(x, 1)
        y_v, z_v, _ = self.block(cols)
        y_vf, z_vf, _ = self.block(cols.flip(1))
        y = y_h + y_hf.flip(1) + self._to_rows(y_v, 1) + self._to_rows(y_vf.flip(1), 1)
        z = z_h + z_hf.flip(-1) + self._to_rows(z_v, 2) + self._to_rows(z_vf.flip(-1), 2)
        return y.mean(dim=1), z, params


@dataclass
class NeckOutput:
    out: torch.Tensor  # (b, out): what the ETF classifier reads
    main: torch.Tensor  # summed gate z of the branch the suppression losses act on
    params: tuple[torch.Tensor, ...]  # dt, B, C of the base branch (first direction)
    params_new: tuple[torch.Tensor, ...] | None  # dt, B, C of the new branch, once it exists


class DualSelectiveNeck(nn.Module):
    """The base branch always; the new (incremental) branch once :meth:`add_new_branch` was called."""

    def __init__(self, shape: NeckShape, detach_residual: bool = True) -> None:
        super().__init__()
        self.shape, self.detach_residual = shape, detach_residual
        self.base = Branch(shape, shape.num_layers)
        self.residual_proj = nn.Linear(shape.pooled_dim, shape.out_dim, bias=False) if shape.use_residual_proj else None
        self.new: Branch | None = None

    def add_new_branch(self) -> None:
        self.new = Branch(self.shape, self.shape.num_layers_new).to(self.base.pos_embed.device)
        self.new.block.zero_gate()

    def forward(self, tokens: torch.Tensor, pooled: torch.Tensor) -> NeckOutput:
        identity = self.residual_proj(pooled) if self.residual_proj is not None else pooled
        x, z, params = self.base(tokens)
        if self.new is None:
            return NeckOutput(out=x + identity, main=z, params=params, params_new=None)
        x_new, z_new, params_new = self.new(tokens.detach())
        out = x.detach() + identity.detach() + x_new if self.detach_residual else x + identity + x_new
        return NeckOutput(out=out, main=z_new, params=params, params_new=params_new)
