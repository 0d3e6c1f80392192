"""A tiny vision transformer for offline scenarios, written so adapters apply uniformly.

Patch embedding is an ``nn.Linear`` over flattened patches (equivalent to a strided conv), and attention has
separate q/k/v/o linears, so every layer an adapter may target is a plain ``nn.Linear`` with a role
(DESIGN.md §3). Trained from scratch in seconds on 8x8 digits; also the CI stand-in for bigger ViTs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cl_suite.api import BlockView, LinearTarget


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not divisible by heads {heads}")
        self.heads = heads
        self.q, self.k, self.v, self.o = (nn.Linear(dim, dim) for _ in range(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, D = x.shape

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.view(B, N, self.heads, D // self.heads).transpose(1, 2)

        out = F.scaled_dot_product_attention(split(self.q(x)), split(self.k(x)), split(self.v(x)))
        return self.o(out.transpose(1, 2).reshape(B, N, D))


class MLP(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: int) -> None:
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(dim), Attention(dim, heads)
        self.norm2, self.mlp = nn.LayerNorm(dim), MLP(dim, dim * mlp_ratio)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class TinyViT(nn.Module):
    """Images (B, C, H, W) -> pooled features (B, dim)."""

    def __init__(self, image_size: int, patch: int, channels: int = 1, dim: int = 32, depth: int = 2,
                 heads: int = 2, mlp_ratio: int = 2) -> None:  # fmt: skip
        super().__init__()
        if image_size % patch:
            raise ValueError(f"image size {image_size} is not divisible by patch size {patch}")
        self.patch, self.dim = patch, dim
        self.patch_embed = nn.Linear(channels * patch * patch, dim)
        self.pos = nn.Parameter(torch.randn(1, (image_size // patch) ** 2, dim) * 0.02)
        self.layers = nn.ModuleList(Block(dim, heads, mlp_ratio) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.patch
        patches = F.unfold(x, kernel_size=p, stride=p).transpose(1, 2)  # (B, tokens, C*p*p)
        h = self.patch_embed(patches) + self.pos
        for block in self.layers:
            h = block(h)
        return self.norm(h).mean(dim=1)

    def linear_targets(self, prefix: str = "") -> list[LinearTarget]:
        targets = [LinearTarget(f"{prefix}patch_embed", "patch", self.patch_embed)]
        for i, block in enumerate(self.layers):
            for role in ("q", "k", "v", "o"):
                targets.append(LinearTarget(f"{prefix}layers.{i}.attn.{role}", role, getattr(block.attn, role)))
            for role in ("fc1", "fc2"):
                targets.append(LinearTarget(f"{prefix}layers.{i}.mlp.{role}", role, getattr(block.mlp, role)))
        return targets

    def blocks(self) -> list[BlockView]:
        return [BlockView(i, b, b.attn, b.norm2, b.mlp) for i, b in enumerate(self.layers)]
