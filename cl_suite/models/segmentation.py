"""A small pyramid-ViT encoder–decoder for 2D organ segmentation, written so adapters apply uniformly.

The shape follows LoCo-PVT (Zhu et al., MICCAI 2024, arXiv 2410.04689; ../shared/reference/strategies.md §6.6) in 2D
and small: an encoder of two stages (a patch-embedding layer, then transformer blocks; the second stage merges 2×2
tokens, PVT's strided "LoCo-PE"), and a decoder that mirrors it (a "deconv PE" that expands each token into 2×2 finer
tokens, a skip from stage 1, blocks, then an expansion back to pixels). Every patch embedding and expansion is an
``nn.Linear`` over flattened patches (equivalent to a strided conv / transposed conv), attention has separate
q/k/v/o linears, and the MLPs are fc1/fc2, so ``linear_targets()`` exposes everything LoCo adapts. Simplified
against the paper: 2D slices instead of 3D patches, full attention instead of PVT's spatial-reduction attention
(``organ-nifti`` defaults to the 3D model with spatial-reduction attention, cl_suite.models.pvt3d; this 2D one
stays for ``organ-tiny`` and ``scenario.model=slice2d``).

Output: one head per task (a per-pixel linear over the decoder's features and the raw intensity) with its own
background channel and the task's organs, as LoCo-PVT and Zhang et al. (MICCAI 2023) give each step its own head.
The loss of task t is cross-entropy + soft Dice on head t only. Labels are partial: a task labels only its own
organs, so organs of earlier tasks are background in its labels ("background shift", MiB); because old heads get no
loss, they are not pushed to call their organs background, and forgetting comes only from the shared trunk drifting.
Prediction runs every seen head and combines them: an organ's score is its head's log-probability, the background's
is the lowest background log-probability of any head (a pixel is background only if every head says so).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from cl_suite.api import Batch, BlockView, LinearTarget, Task, TaskModel
from cl_suite.models.tiny_vit import Block


def _patchify(x: torch.Tensor, p: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, H/p * W/p, C*p*p): non-overlapping patches, flattened."""
    return F.unfold(x, kernel_size=p, stride=p).transpose(1, 2)


def _merge_tokens(h: torch.Tensor, side: int) -> torch.Tensor:
    """(B, side², D) -> (B, (side/2)², 4D): each 2×2 group of tokens concatenated (a strided conv's input)."""
    B, _, D = h.shape
    grid = h.transpose(1, 2).reshape(B, D, side, side)
    return _patchify(grid, 2)


def _expand_tokens(h: torch.Tensor, side: int, factor: int) -> torch.Tensor:
    """(B, side², C·f²) -> (B, C, side·f, side·f): each token spread over an f×f block (a transposed conv's output)."""
    B, _, Cf = h.shape
    grid = h.transpose(1, 2).reshape(B, Cf, side, side)
    return F.pixel_shuffle(grid, factor)


class SegTransformer(nn.Module):
    """Images (B, C, H, W) -> per-pixel features (B, out_channels, H, W)."""

    def __init__(self, image_size: int = 64, channels: int = 1, patch: int = 4, dims: tuple[int, int] = (32, 64),
                 depths: tuple[int, int] = (2, 2), decoder_depth: int = 1, heads: int = 2, mlp_ratio: int = 2,
                 out_channels: int = 16) -> None:  # fmt: skip
        super().__init__()
        if image_size % (patch * 2):
            raise ValueError(f"image size {image_size} must be divisible by 2 × patch ({2 * patch})")
        d1, d2 = dims
        self.patch, self.side = patch, image_size // patch
        self.patch_embed = nn.Linear(channels * patch * patch, d1)
        self.pos1 = nn.Parameter(torch.randn(1, self.side**2, d1) * 0.02)
        self.stage1 = nn.ModuleList(Block(d1, heads, mlp_ratio) for _ in range(depths[0]))
        self.merge = nn.Linear(4 * d1, d2)
        self.pos2 = nn.Parameter(torch.randn(1, (self.side // 2) ** 2, d2) * 0.02)
        self.stage2 = nn.ModuleList(Block(d2, heads, mlp_ratio) for _ in range(depths[1]))
        self.up = nn.Linear(d2, 4 * d1)  # decoder "deconv PE": one token -> 2×2 finer tokens
        self.decoder = nn.ModuleList(Block(d1, heads, mlp_ratio) for _ in range(decoder_depth))
        self.norm = nn.LayerNorm(d1)
        self.out = nn.Linear(d1, out_channels * patch * patch)  # tokens -> pixels
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.side
        h1 = self.patch_embed(_patchify(x, self.patch)) + self.pos1
        for block in self.stage1:
            h1 = block(h1)
        h2 = self.merge(_merge_tokens(h1, s)) + self.pos2
        for block in self.stage2:
            h2 = block(h2)
        up = _expand_tokens(self.up(h2), s // 2, 2).flatten(2).transpose(1, 2)  # (B, s², d1)
        h = up + h1
        for block in self.decoder:
            h = block(h)
        return _expand_tokens(self.out(self.norm(h)), s, self.patch)

    def linear_targets(self, prefix: str = "") -> list[LinearTarget]:
        targets = [LinearTarget(f"{prefix}patch_embed", "patch", self.patch_embed),
                   LinearTarget(f"{prefix}merge", "patch", self.merge)]  # fmt: skip
        for stage in ("stage1", "stage2", "decoder"):
            for i, block in enumerate(getattr(self, stage)):
                for role in ("q", "k", "v", "o"):
                    targets.append(LinearTarget(f"{prefix}{stage}.{i}.attn.{role}", role, getattr(block.attn, role)))
                for role in ("fc1", "fc2"):
                    targets.append(LinearTarget(f"{prefix}{stage}.{i}.mlp.{role}", role, getattr(block.mlp, role)))
        targets += [LinearTarget(f"{prefix}up", "patch", self.up), LinearTarget(f"{prefix}out", "patch", self.out)]
        return targets

    def blocks(self) -> list[BlockView]:
        every = [*self.stage1, *self.stage2, *self.decoder]
        return [BlockView(i, b, b.attn, b.norm2, b.mlp) for i, b in enumerate(every)]


def soft_dice_loss(probs: torch.Tensor, onehot: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """1 − mean soft Dice over the channels given (B, K, *spatial), pooled over the batch (stable for absent organs)."""
    dims = (0, *range(2, probs.ndim))
    inter = (probs * onehot).sum(dims)
    denom = probs.sum(dims) + onehot.sum(dims)
    return 1 - ((2 * inter + eps) / (denom + eps)).mean()


class SegmentationModel(TaskModel):
    """Per-task heads over a shared backbone (2D SegTransformer or 3D PVT3D); labels hold global organ ids (0 =
    background). With ``roi`` set (the 3D model), inputs of another size go through MONAI's sliding-window inference
    (``monai.inferers.sliding_window_inference``: windows of ``roi`` overlapping by ``overlap``, averaged with MONAI's
    default constant weights)."""

    def __init__(self, backbone: nn.Module, task_organs: Sequence[Sequence[int]], num_organs: int,
                 backbone_name: str, dice_weight: float = 1.0, roi: Sequence[int] | None = None,
                 overlap: float = 0.25, sw_batch_size: int = 2) -> None:  # fmt: skip
        super().__init__()
        self.backbone = backbone
        self.roi = tuple(int(r) for r in roi) if roi else None
        self.overlap, self.sw_batch_size = overlap, sw_batch_size
        self.backbone_name = backbone_name
        self.dice_weight = dice_weight
        self.num_organs = num_organs
        self.task_organs = [tuple(int(o) for o in organs) for organs in task_organs]
        for organs in self.task_organs:
            if not organs or min(organs) < 1 or max(organs) > num_organs:
                raise ValueError(f"task organ ids must be in 1..{num_organs}, got {list(organs)}")
        width = backbone.out_channels + 1  # decoder features + the raw intensity (a full-resolution skip)
        self.heads = nn.ModuleList(nn.Linear(width, 1 + len(organs)) for organs in self.task_organs)
        self.register_buffer("seen", torch.zeros(len(self.task_organs), dtype=torch.bool))
        self.current = 0

    # -- tasks -----------------------------------------------------------------------------------------------
    def on_task_start(self, task: Task) -> None:
        self.seen[task.index] = True
        self.current = task.index

    def seen_tasks(self) -> list[int]:
        return [int(t) for t in torch.nonzero(self.seen).flatten()]

    def head_parameters(self) -> list[nn.Parameter]:
        return list(self.heads[self.current].parameters())

    # -- forward ---------------------------------------------------------------------------------------------
    def features(self, batch: Batch) -> torch.Tensor:
        x = batch["x"]
        return torch.cat([self.backbone(x), x[:, :1]], dim=1)

    def head_logits(self, features: torch.Tensor, task_index: int) -> torch.Tensor:
        """(B, 1 + n_t, H, W): background then task ``task_index``'s organs."""
        return self.heads[task_index](features.movedim(1, -1)).movedim(-1, 1)

    def windowed(self, fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        """``fn(x)``, or MONAI's sliding-window inference of ``fn`` over ``x`` when ``x`` is not one ``roi`` window."""
        if self.roi is None or tuple(x.shape[2:]) == self.roi:
            return fn(x)
        from monai.inferers import sliding_window_inference

        return sliding_window_inference(x, self.roi, self.sw_batch_size, fn, overlap=self.overlap)

    def task_logits(self, batch: Batch, task_index: int) -> torch.Tensor:
        return self.windowed(lambda x: self.head_logits(self.features({"x": x}), task_index), batch["x"])

    def local_targets(self, labels: torch.Tensor, task_index: int) -> torch.Tensor:
        """Global organ ids -> 0 (background, incl. other tasks' organs) or 1..n_t for the task's own organs."""
        lut = torch.zeros(self.num_organs + 1, dtype=torch.long, device=labels.device)
        lut[list(self.task_organs[task_index])] = torch.arange(1, len(self.task_organs[task_index]) + 1,
                                                               device=labels.device)  # fmt: skip
        return lut[labels]

    def loss_from_logits(self, logits: torch.Tensor, labels: torch.Tensor, task_index: int) -> torch.Tensor:
        target = self.local_targets(labels, task_index)
        loss = F.cross_entropy(logits, target)
        if self.dice_weight > 0:
            probs = logits.softmax(1)[:, 1:]
            onehot = F.one_hot(target, logits.shape[1]).movedim(-1, 1)[:, 1:].to(probs.dtype)
            loss = loss + self.dice_weight * soft_dice_loss(probs, onehot)
        return loss

    def loss(self, batch: Batch, task: Task) -> torch.Tensor:
        """Loss of ``task``'s head; a batch mixing tasks (joint training, replay; items carry ``task``) trains each
        sample's own head on its own partial labels, weighted by the share of samples."""
        owners = batch.get("task")
        if owners is None or bool((owners == task.index).all()):
            return self.loss_from_logits(self.task_logits(batch, task.index), batch["y"], task.index)
        features = self.features(batch)
        total = features.new_zeros(())
        for t in torch.unique(owners).tolist():
            rows = owners == t
            logits = self.head_logits(features[rows], t)
            total = total + rows.float().mean() * self.loss_from_logits(logits, batch["y"][rows], t)
        return total

    def combine(self, per_task: Mapping[int, torch.Tensor]) -> torch.Tensor:
        """Per-task head logits -> (B, 1 + num_organs, H, W) scores over global ids (see the module docstring)."""
        any_logits = next(iter(per_task.values()), None)
        if any_logits is None:
            raise ValueError("combine() needs the logits of at least one task")
        B, _, *spatial = any_logits.shape
        low = torch.finfo(any_logits.dtype).min
        out = any_logits.new_full((B, 1 + self.num_organs, *spatial), low)
        backgrounds = []
        for t, logits in per_task.items():
            logp = logits.log_softmax(1)
            backgrounds.append(logp[:, 0])
            out[:, list(self.task_organs[t])] = logp[:, 1:]
        out[:, 0] = torch.stack(backgrounds).amin(0)
        return out

    def predict(self, batch: Batch, task_id: int | None) -> torch.Tensor:
        tasks = self.seen_tasks() if task_id is None else [task_id]
        x = batch["x"]
        if not tasks:  # before any task: everything is background
            out = x.new_full((x.shape[0], 1 + self.num_organs, *x.shape[2:]), torch.finfo(x.dtype).min)
            out[:, 0] = 0
            return out

        def all_heads(window: torch.Tensor) -> torch.Tensor:
            features = self.features({"x": window})
            return torch.cat([self.head_logits(features, t) for t in tasks], dim=1)

        logits = self.windowed(all_heads, x).split([1 + len(self.task_organs[t]) for t in tasks], dim=1)
        return self.combine(dict(zip(tasks, logits)))

    # -- adapter view ----------------------------------------------------------------------------------------
    def linear_targets(self) -> list[LinearTarget]:
        return self.backbone.linear_targets(prefix="backbone.")

    def blocks(self) -> list[BlockView]:
        return self.backbone.blocks()
