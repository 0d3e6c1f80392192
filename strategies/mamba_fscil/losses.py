"""The ETF classifier, its dot-regression loss, and Mamba-FSCIL's class-sensitive (suppression, separation) losses.

Transcribed from xiaojieli0903/Mamba-FSCIL @ f253969ac3ea32a71cd3bfc242907ad69b1b0b9d:

- ``mmfscil/models/ETFHead.py``: the simplex ETF ``W = sqrt(K/(K-1)) * U (I - 11^T/K)`` with U (d x K) the Q of
  a QR decomposition of a uniform random matrix; features are L2-normalised; scores are ``x @ W``; the DR loss is
  ``0.5 * mean((x . w_y - r_y)^2)`` times ``loss_weight`` (10 in ``configs/_base_/models/resnet_etf.py``), where with
  ``with_len`` the target is ``r_y w_y`` with ``r_c = sqrt((batch / classes in batch) / count_c)`` (rebalances
  classes of a batch), else r = 1.
- ``mmfscil/models/classifier.py``: suppression ``w_supp * ||z_base||_F / numel(z_base)`` on the gate z of base-class
  samples, minus ``w_supp_novel * ||z_novel||_F / numel(z_novel)`` on novel-class samples; separation
  ``w_sep * mean|I - S|`` where S is the 2x2 cosine-similarity matrix of the batch-and-position means of a scan
  parameter (dt, B or C) over base-class and over novel-class samples (``param_avg_dim='0-1-3'``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def etf_classifier(feat_dim: int, num_classes: int, generator: torch.Generator) -> torch.Tensor:
    """A (feat_dim, num_classes) simplex equiangular tight frame with unit-norm columns."""
    if feat_dim < num_classes:
        raise ValueError(f"an ETF of {num_classes} classes needs at least {num_classes} feature dims, got {feat_dim}")
    orth, _ = torch.linalg.qr(torch.rand(feat_dim, num_classes, generator=generator, dtype=torch.float64))
    center = torch.eye(num_classes, dtype=torch.float64) - 1.0 / num_classes
    return (orth @ center * math.sqrt(num_classes / (num_classes - 1))).float()


def length_rect(labels: torch.Tensor) -> torch.Tensor:
    """r_c = sqrt(gamma / count_c), gamma = batch size / number of classes in the batch (ETFHead.produce_training_rect)."""
    classes, inverse, counts = torch.unique(labels, return_inverse=True, return_counts=True)
    gamma = len(labels) / len(classes)
    return torch.sqrt(gamma / counts.float())[inverse]


def dr_loss(feats: torch.Tensor, labels: torch.Tensor, etf: torch.Tensor, with_len: bool,
            weight: float) -> torch.Tensor:  # fmt: skip
    """Dot-regression loss of normalised features towards their class's ETF vector."""
    x = F.normalize(feats, dim=-1)
    target = etf[:, labels].t()
    if with_len:
        rect = length_rect(labels)
        dot = (x * target).sum(-1) * rect
        return weight * 0.5 * ((dot - rect) ** 2).mean()
    return weight * 0.5 * (((x * target).sum(-1) - 1.0) ** 2).mean()


def suppression_loss(z: torch.Tensor, is_base: torch.Tensor, w_base: float, w_novel: float) -> torch.Tensor:
    """Push the gate z of the incremental branch to zero on base-class samples and (weakly) up on novel ones."""
    loss = z.new_zeros(())
    if w_base > 0 and is_base.any():
        zb = z[is_base]
        loss = loss + w_base * torch.linalg.vector_norm(zb) / zb.numel()
    if w_novel > 0 and (~is_base).any():
        zn = z[~is_base]
        loss = loss - w_novel * torch.linalg.vector_norm(zn) / zn.numel()
    return loss


def separation_loss(param: torch.Tensor, is_base: torch.Tensor) -> torch.Tensor:
    """mean|I - S| for the cosine similarities S of the mean base-class and mean novel-class scan parameters.

    ``param`` is (batch, rank, L); it is averaged over the samples of each group and over positions."""
    means = torch.stack([param[is_base].mean(dim=(0, 2)), param[~is_base].mean(dim=(0, 2))])
    unit = F.normalize(means, dim=-1)
    return (torch.eye(2, device=param.device) - unit @ unit.t()).abs().mean()


def mixup_features(feats: torch.Tensor, labels: torch.Tensor, lam: float, generator: torch.Generator | None = None):
    """Feature mixup with a fixed coefficient (``ImageClassifierCIL.mixup_feat``: lam = alpha, not a Beta draw)."""
    index = torch.randperm(len(feats), generator=generator).to(feats.device)
    return lam * feats + (1 - lam) * feats[index], labels, labels[index]
