"""``cl-suite pretrain tiny-clip``: contrastive pretraining of the tiny CLIP on generated image-caption pairs.

Deterministic: batch ``s`` is drawn from ``numpy.random.default_rng([seed, s])``, the model starts from
``torch.manual_seed(seed)``, and torch runs single-threaded with deterministic algorithms, so the same command on the
same versions (torch, numpy, Pillow, scikit-image, open_clip) writes the same weights. The loss is CLIP's symmetric
InfoNCE with one change: pairs whose captions are identical ("a photo of a face.") are all positives of each other
(soft targets), because generated captions repeat within a batch. Reference: Radford et al. 2021 (CLIP), the open_clip training loss.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from cl_suite.models import tiny_clip, tiny_clip_data


@dataclass
class PretrainConfig:
    steps: int = 900
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 0.05
    warmup: int = 100
    seed: int = 0
    threads: int = 1  # fixed, so reductions (and the weights) do not depend on the machine's core count


def multi_positive_loss(image: torch.Tensor, text: torch.Tensor, captions: list[str], scale: torch.Tensor):
    """Symmetric contrastive loss where every pair with the same caption counts as a positive."""
    ids = {c: i for i, c in enumerate(dict.fromkeys(captions))}
    key = torch.tensor([ids[c] for c in captions])
    same = (key[:, None] == key[None, :]).float()
    target = same / same.sum(1, keepdim=True)
    logits = scale * F.normalize(image, dim=-1) @ F.normalize(text, dim=-1).T
    i2t = -(target * logits.log_softmax(1)).sum(1).mean()
    t2i = -(target * logits.T.log_softmax(1)).sum(1).mean()
    return (i2t + t2i) / 2


@torch.no_grad()
def held_out_accuracy(model, tokenizer, seed: int = 12345) -> dict[str, float]:
    """Zero-shot accuracy on shape-colour pairs never seen in pretraining: exact pair (chance 1/48), shape, colour."""
    images, labels, captions = tiny_clip_data.held_out_set(seed)
    model.eval()
    img = F.normalize(model.encode_image(tiny_clip.to_tensor(images)), dim=-1)
    txt = F.normalize(model.encode_text(tokenizer(captions)), dim=-1)
    pred = (img @ txt.T).argmax(1).numpy()
    n_col = len(tiny_clip_data.COLOUR_NAMES)
    return {
        "pair_acc": 100.0 * float(np.mean(pred == labels)),
        "shape_acc": 100.0 * float(np.mean(pred // n_col == labels // n_col)),
        "colour_acc": 100.0 * float(np.mean(pred % n_col == labels % n_col)),
        "chance_pair": 100.0 / len(captions),
    }


def pretrain(cfg: PretrainConfig, out: Path = tiny_clip.WEIGHTS, *, log: TextIO = sys.stderr,
             progress: bool = True) -> dict[str, float | str]:  # fmt: skip
    """Train from scratch, write the weights and their sha256; return the held-out accuracies and the digest."""
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    torch.use_deterministic_algorithms(True)
    try:
        model, tokenizer = tiny_clip.build(cfg.seed), tiny_clip.tokenizer()
        model.train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)

        def factor(step: int) -> float:
            if step < cfg.warmup:
                return (step + 1) / cfg.warmup
            return 0.5 * (1 + math.cos(math.pi * (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        t0 = time.perf_counter()
        bar = tqdm(range(cfg.steps), desc="pretrain tiny-clip", file=log, disable=None if progress else True,
                   mininterval=2)  # fmt: skip
        for step in bar:
            images, captions = tiny_clip_data.batch(np.random.default_rng([cfg.seed, step]), cfg.batch_size)
            loss = multi_positive_loss(model.encode_image(tiny_clip.to_tensor(images)),
                                       model.encode_text(tokenizer(captions)), captions,
                                       model.logit_scale.exp().clamp(max=100))  # fmt: skip
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            if step % 50 == 0 or step == cfg.steps - 1:
                bar.set_postfix(loss=f"{loss.item():.3f}")
        bar.close()
        digest = tiny_clip.save(model, out)
        result: dict[str, float | str] = {**held_out_accuracy(tiny_clip.load(out, verify=False), tokenizer)}
        result.update(sha256=digest, seconds=round(time.perf_counter() - t0, 1), path=str(out))
        return result
    finally:
        torch.use_deterministic_algorithms(False)
        torch.set_num_threads(previous_threads)
