"""A 3D pyramid vision transformer encoder–decoder with spatial-reduction attention, for volumetric organ segmentation.

What LoCo-PVT (Zhu et al., MICCAI 2024, arXiv 2410.04689, Fig. 2) makes public, and how it is followed here:

* a stack of encoder and decoder blocks, each block a patch-embedding (PE) layer followed by transformer layers:
  the encoder's PE ("LoCo-PE") downsamples by 2 (a stride-2 convolution), the decoder's ("DeconvPE") upsamples by 2
  (a transposed convolution). Here every PE is an ``nn.Linear`` over non-overlapping patches, which is the same map as
  a convolution whose kernel equals its stride (and the transposed one), so adapters reach them through
  ``linear_targets()`` with role ``patch``; the first PE takes ``patch``³ voxels, the later ones 2³ tokens;
* transformer layers with PVT's spatial-reduction attention (Wang et al., ICCV 2021, arXiv 2102.12122, §3.3):
  queries from every token, keys and values from the tokens reduced by a stride-``sr`` patch embedding
  (kernel = stride = ``sr``, then LayerNorm), with separate q/k/v/o linears and fc1/fc2 MLPs;
* LoRA goes on q/v, the MLPs and the PEs (the roles LoCo-LoRA targets); the spatial-reduction embedding is not
  exposed as an adapter target (LoCo-PVT names only those three layer types).

Simplifications, stated because the paper's code is not public: PVT v1's learned position embeddings per stage
(fixed to the ``roi`` the model is built for, hence sliding-window inference over whole volumes), non-overlapping
PEs, an additive skip from the encoder stage of the same resolution, and stage widths/depths/reduction ratios given
by the caller (the paper's are not stated in the material available).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from cl_suite.api import BlockView, LinearTarget
from cl_suite.models.tiny_vit import MLP


def patchify3d(x: torch.Tensor, p: int) -> torch.Tensor:
    """(B, C, D, H, W) -> (B, D/p·H/p·W/p, C·p³): non-overlapping cubes, flattened (a kernel=stride=p conv's input)."""
    B, C, D, H, W = x.shape
    x = x.reshape(B, C, D // p, p, H // p, p, W // p, p)
    return x.permute(0, 2, 4, 6, 1, 3, 5, 7).reshape(B, (D // p) * (H // p) * (W // p), C * p**3)


def unpatchify3d(h: torch.Tensor, grid: Sequence[int], p: int) -> torch.Tensor:
    """(B, d·h·w, C·p³) -> (B, C, d·p, h·p, w·p): each token spread over a p³ cube (a transposed conv's output)."""
    B, _, Cp = h.shape
    d, hh, w = grid
    C = Cp // p**3
    x = h.reshape(B, d, hh, w, C, p, p, p).permute(0, 4, 1, 5, 2, 6, 3, 7)
    return x.reshape(B, C, d * p, hh * p, w * p)


def tokens_to_grid(h: torch.Tensor, grid: Sequence[int]) -> torch.Tensor:
    """(B, N, C) -> (B, C, d, h, w)."""
    return h.transpose(1, 2).reshape(h.shape[0], h.shape[2], *grid)


class SRAttention(nn.Module):
    """PVT's spatial-reduction attention: keys/values from tokens reduced by a stride-``sr`` linear patch embedding."""

    def __init__(self, dim: int, heads: int, sr: int) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not divisible by heads {heads}")
        self.heads, self.sr = heads, sr
        self.q, self.k, self.v, self.o = (nn.Linear(dim, dim) for _ in range(4))
        if sr > 1:
            self.reduce = nn.Linear(dim * sr**3, dim)
            self.reduce_norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, grid: Sequence[int]) -> torch.Tensor:
        B, N, D = x.shape
        kv = x
        if self.sr > 1:
            kv = self.reduce_norm(self.reduce(patchify3d(tokens_to_grid(x, grid), self.sr)))

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.reshape(B, t.shape[1], self.heads, D // self.heads).transpose(1, 2)

        out = F.scaled_dot_product_attention(split(self.q(x)), split(self.k(kv)), split(self.v(kv)))
        return self.o(out.transpose(1, 2).reshape(B, N, D))


class SRBlock(nn.Module):
    """Pre-norm transformer layer: x + SRA(norm1(x)), then x + MLP(norm2(x))."""

    def __init__(self, dim: int, heads: int, sr: int, mlp_ratio: int) -> None:
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(dim), SRAttention(dim, heads, sr)
        self.norm2, self.mlp = nn.LayerNorm(dim), MLP(dim, dim * mlp_ratio)
        self.grid: tuple[int, ...] = ()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), self.grid)
        return x + self.mlp(self.norm2(x))


class PVT3D(nn.Module):
    """Volumes (B, C, *roi) -> per-voxel features (B, out_channels, *roi).

    Encoder stage s (s = 0..S-1): PE (``patch``³ voxels for s = 0, 2³ tokens after), position embedding, ``depths[s]``
    SR blocks with ratio ``sr[s]``. Decoder stage s (s = S-2..0): DeconvPE (one token -> 2³ tokens), + the encoder
    stage s output (skip), ``decoder_depth`` SR blocks with ratio ``sr[s]``. Then LayerNorm and a linear expansion of
    each token into ``patch``³ voxels of ``out_channels`` features.
    """

    def __init__(self, roi: Sequence[int] = (32, 32, 32), channels: int = 1, patch: int = 4,
                 dims: Sequence[int] = (16, 32, 64), depths: Sequence[int] = (1, 1, 1), sr: Sequence[int] = (4, 2, 1),
                 heads: Sequence[int] = (1, 2, 4), decoder_depth: int = 1, mlp_ratio: int = 2,
                 out_channels: int = 16) -> None:  # fmt: skip
        super().__init__()
        S = len(dims)
        if not (len(depths) == len(sr) == len(heads) == S) or S < 1:
            raise ValueError(f"dims, depths, sr and heads need one entry per stage, got {dims}, {depths}, {sr}, {heads}")
        self.roi = tuple(int(r) for r in roi)
        scale = patch * 2 ** (S - 1)
        if len(self.roi) != 3 or any(r % scale for r in self.roi):
            raise ValueError(f"roi {self.roi} must be 3 sizes divisible by patch × 2^(stages-1) = {scale}")
        self.patch, self.out_channels = patch, out_channels
        self.grids = [tuple(r // (patch * 2**s) for r in self.roi) for s in range(S)]
        for s, g in enumerate(self.grids):
            if any(n % sr[s] for n in g):
                raise ValueError(f"stage {s}: token grid {g} is not divisible by its reduction ratio {sr[s]}")
        self.embed = nn.ModuleList(
            [nn.Linear(channels * patch**3, dims[0])] + [nn.Linear(8 * dims[s - 1], dims[s]) for s in range(1, S)])
        self.pos = nn.ParameterList(nn.Parameter(torch.randn(1, g[0] * g[1] * g[2], d) * 0.02)
                                    for g, d in zip(self.grids, dims))  # fmt: skip
        self.encoder = nn.ModuleList(nn.ModuleList(SRBlock(dims[s], heads[s], sr[s], mlp_ratio) for _ in range(depths[s]))
                                     for s in range(S))  # fmt: skip
        self.up = nn.ModuleList(nn.Linear(dims[s + 1], 8 * dims[s]) for s in range(S - 1))  # DeconvPE per level
        self.decoder = nn.ModuleList(nn.ModuleList(SRBlock(dims[s], heads[s], sr[s], mlp_ratio) for _ in range(decoder_depth))
                                     for s in range(S - 1))  # fmt: skip
        self.norm = nn.LayerNorm(dims[0])
        self.out = nn.Linear(dims[0], out_channels * patch**3)
        for s, stage in enumerate(self.encoder):
            for block in stage:
                block.grid = self.grids[s]
        for s, stage in enumerate(self.decoder):
            for block in stage:
                block.grid = self.grids[s]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[2:]) != self.roi:
            raise ValueError(f"PVT3D was built for windows of {self.roi}, got {tuple(x.shape[2:])}; "
                             "run whole volumes through sliding-window inference")  # fmt: skip
        skips = []
        h = self.embed[0](patchify3d(x, self.patch)) + self.pos[0]
        for s, stage in enumerate(self.encoder):
            if s > 0:
                h = self.embed[s](patchify3d(tokens_to_grid(h, self.grids[s - 1]), 2)) + self.pos[s]
            for block in stage:
                h = block(h)
            skips.append(h)
        for s in reversed(range(len(self.up))):
            up = unpatchify3d(self.up[s](h), self.grids[s + 1], 2)  # (B, d_s, *grid_s)
            h = up.flatten(2).transpose(1, 2) + skips[s]
            for block in self.decoder[s]:
                h = block(h)
        return unpatchify3d(self.out(self.norm(h)), self.grids[0], self.patch)

    def _stages(self) -> list[tuple[str, nn.ModuleList]]:
        return [*((f"encoder.{s}", st) for s, st in enumerate(self.encoder)),
                *((f"decoder.{s}", st) for s, st in enumerate(self.decoder))]  # fmt: skip

    def linear_targets(self, prefix: str = "") -> list[LinearTarget]:
        targets = [LinearTarget(f"{prefix}embed.{s}", "patch", m) for s, m in enumerate(self.embed)]
        for name, stage in self._stages():
            for i, block in enumerate(stage):
                for role in ("q", "k", "v", "o"):
                    targets.append(LinearTarget(f"{prefix}{name}.{i}.attn.{role}", role, getattr(block.attn, role)))
                for role in ("fc1", "fc2"):
                    targets.append(LinearTarget(f"{prefix}{name}.{i}.mlp.{role}", role, getattr(block.mlp, role)))
        targets += [LinearTarget(f"{prefix}up.{s}", "patch", m) for s, m in enumerate(self.up)]
        targets.append(LinearTarget(f"{prefix}out", "patch", self.out))
        return targets

    def blocks(self) -> list[BlockView]:
        every = [b for _, stage in self._stages() for b in stage]
        return [BlockView(i, b, b.attn, b.norm2, b.mlp) for i, b in enumerate(every)]
