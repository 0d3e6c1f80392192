"""The tiny CLIP's image tower as a feature backbone for the tiny classification scenarios (digits-tiny, fscil-tiny,
avalanche-digits): the "pretrained ViT" regime.

Why: SEMA, CoSO, MoRA, CoDyRA and OSFT adapt a *pretrained* ViT (ViT-B/16 in their papers); on a ViT trained from
scratch on the first task they have nothing to preserve or route on. The project's tiny CLIP
(cl_suite.models.tiny_clip, committed weights with a sha256) was pretrained on generated shapes, glyphs, textures and
faces, never on the scenarios' images, and its frozen features separate the digits well. Its fused attention and
patch conv are split into plain ``nn.Linear`` layers (cl_suite.models.clip.split_fused_layers, numerically the same
function), so ``linear_targets()`` and ``blocks()`` give adapter methods the same view as on the tiny ViT.

The features are the tower's pooled [CLS] output before CLIP's projection (``width`` = 128), as PILOT/SEMA/CoSO put
their classifier on the ViT's [CLS] feature, not on a CLIP embedding.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from cl_suite.api import BlockView, LinearTarget

NAME = "tiny-clip"


def is_tiny_clip(spec: str) -> bool:
    return spec == NAME or spec.startswith(NAME + "@")


class TinyClipVision(nn.Module):
    """Images (B, 3, 32, 32), CLIP-normalised -> pooled [CLS] features (B, width) of the pretrained tiny CLIP."""

    def __init__(self, weights: str | Path = "") -> None:
        super().__init__()
        from cl_suite.models import tiny_clip
        from cl_suite.models.clip import split_fused_layers

        clip = tiny_clip.load(weights or tiny_clip.WEIGHTS)
        self.visual = split_fused_layers(clip).visual
        self.visual.proj = None  # features before CLIP's projection (the ViT's [CLS] feature)
        self.dim = self.visual.transformer.width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.visual(x)

    def _blocks(self) -> list[nn.Module]:
        return list(self.visual.transformer.resblocks)

    def linear_targets(self, prefix: str = "") -> list[LinearTarget]:
        from cl_suite.models.clip import block_targets

        targets = [LinearTarget(f"{prefix}visual.conv1.proj", "patch", self.visual.conv1.proj)]
        for i, block in enumerate(self._blocks()):
            targets += block_targets(f"{prefix}visual.transformer.resblocks.{i}", block)
        return targets

    def blocks(self) -> list[BlockView]:
        return [BlockView(i, b, b.attn, b.ln_2, b.mlp) for i, b in enumerate(self._blocks())]


def weights_of(spec: str) -> str:
    """``tiny-clip`` -> "" (the committed weights); ``tiny-clip@/path.pt`` -> the path."""
    return spec.partition("@")[2]


def backbone_id(spec: str) -> str:
    """The leaderboard's backbone id: the committed weights are named by their sha256 prefix, so a re-pretrained
    tower never shares a leaderboard row with the old one."""
    from cl_suite.models import tiny_clip

    path = Path(weights_of(spec) or tiny_clip.WEIGHTS)
    digest = tiny_clip.sha256(path)[:8] if path.exists() else "missing"
    return f"tiny-clip-vit(pretrained,sha={digest})"


def to_clip_input(images: torch.Tensor) -> torch.Tensor:
    """Images (N, C, H, W) in [0, 1] with C in (1, 3) -> the tower's CLIP-normalised (N, 3, 32, 32)."""
    from cl_suite.models.tiny_clip import to_tensor

    x = images.permute(0, 2, 3, 1)
    return to_tensor(x[..., 0] if x.shape[-1] == 1 else x)
