"""CLIP on open_clip as a TaskModel: zero-shot classification by similarity to class-name prompts.

Why this shape: MTIL/X-TAIL/CLIP class-incremental methods (ZSCL, MoE-Adapters, RAIL, CoDyRA; see
../shared/reference/benchmarks.md §2) all classify an image by the cosine similarity between its embedding and the
text embeddings of "a photo of a {class}." prompts, and train with image->text cross-entropy over the class names the
protocol allows. So the class names and templates live in the model (one global label space, per-class templates),
and the allowed set is chosen per call: the task's own classes (MTIL, task-incremental), the seen classes (class-
incremental, as ZSCL's cil/ code grows its text list), or every class of every domain (X-TAIL, task-agnostic).

For adapters, every ``nn.MultiheadAttention`` is replaced by :class:`SplitAttention` (separate q/k/v/o linears copied
from the fused ``in_proj``; numerically the same function) and the vision tower's patch conv by a linear over
flattened patches (:class:`PatchLinear`), so ``linear_targets()`` and ``blocks()`` cover both towers uniformly.
Backbones: ``open_clip:<arch>@<pretrained>`` (a hub tag or a local checkpoint path) and ``tiny-clip`` (the
project's own small CLIP, cl_suite.models.tiny_clip).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from cl_suite.api import Batch, BlockView, LinearTarget, Task, TaskModel


class SplitAttention(nn.Module):
    """``nn.MultiheadAttention`` (self- or cross-attention with equal dims) as four ``nn.Linear`` layers."""

    def __init__(self, mha: nn.MultiheadAttention) -> None:
        super().__init__()
        if not mha._qkv_same_embed_dim or mha.bias_k is not None or mha.dropout:
            raise ValueError("SplitAttention supports attention with equal q/k/v dims, no bias_k/v and no dropout")
        dim = mha.embed_dim
        self.heads, self.batch_first = mha.num_heads, mha.batch_first
        has_bias = mha.in_proj_bias is not None
        self.q, self.k, self.v = (nn.Linear(dim, dim, bias=has_bias) for _ in range(3))
        self.o = nn.Linear(dim, dim, bias=mha.out_proj.bias is not None)
        with torch.no_grad():
            for i, lin in enumerate((self.q, self.k, self.v)):
                lin.weight.copy_(mha.in_proj_weight[i * dim : (i + 1) * dim])
                if has_bias:
                    lin.bias.copy_(mha.in_proj_bias[i * dim : (i + 1) * dim])
            self.o.weight.copy_(mha.out_proj.weight)
            if self.o.bias is not None:
                self.o.bias.copy_(mha.out_proj.bias)

    def forward(self, query, key=None, value=None, need_weights: bool = False, attn_mask=None,
                key_padding_mask=None, **_):  # fmt: skip
        """Same call and return convention as ``nn.MultiheadAttention`` (weights are never returned)."""
        if key_padding_mask is not None:
            raise NotImplementedError("SplitAttention does not take key_padding_mask")
        key = query if key is None else key
        value = key if value is None else value
        if not self.batch_first:
            query, key, value = (t.transpose(0, 1) for t in (query, key, value))
        B, L, D = query.shape

        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.view(B, -1, self.heads, D // self.heads).transpose(1, 2)

        if attn_mask is not None and attn_mask.dtype == torch.bool:  # MHA: True = masked; SDPA: True = attend
            attn_mask = torch.zeros_like(attn_mask, dtype=query.dtype).masked_fill(attn_mask, float("-inf"))
        out = F.scaled_dot_product_attention(heads(self.q(query)), heads(self.k(key)), heads(self.v(value)),
                                             attn_mask=attn_mask)  # fmt: skip
        out = self.o(out.transpose(1, 2).reshape(B, L, D))
        return (out if self.batch_first else out.transpose(0, 1)), None


class PatchLinear(nn.Module):
    """A bias-free strided patch conv as ``proj``: an ``nn.Linear`` over flattened patches; same output layout."""

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        if conv.kernel_size != conv.stride or conv.padding not in ((0, 0), "valid") or conv.groups != 1:
            raise ValueError("PatchLinear needs a conv whose stride equals its kernel, no padding, one group")
        self.kernel = conv.kernel_size
        out_ch, in_ch, kh, kw = conv.weight.shape
        self.proj = nn.Linear(in_ch * kh * kw, out_ch, bias=conv.bias is not None)
        with torch.no_grad():
            self.proj.weight.copy_(conv.weight.reshape(out_ch, -1))
            if conv.bias is not None:
                self.proj.bias.copy_(conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, _, H, W = x.shape
        patches = F.unfold(x, kernel_size=self.kernel, stride=self.kernel).transpose(1, 2)  # (B, N, C*kh*kw)
        out = self.proj(patches)
        return out.transpose(1, 2).reshape(B, -1, H // self.kernel[0], W // self.kernel[1])


def split_fused_layers(model: nn.Module) -> nn.Module:
    """Replace every MultiheadAttention by SplitAttention and the ViT patch conv by PatchLinear, in place."""
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, nn.MultiheadAttention):
                setattr(module, child_name, SplitAttention(child))
            elif child_name == "conv1" and isinstance(child, nn.Conv2d) and name.endswith("visual"):
                setattr(module, child_name, PatchLinear(child))
    return model


def _residual_blocks(clip: nn.Module) -> list[tuple[str, nn.Module]]:
    """(dotted name, block) of every open_clip ResidualAttentionBlock: vision tower first, then text."""
    from open_clip.transformer import ResidualAttentionBlock

    found = [(n, m) for n, m in clip.named_modules() if isinstance(m, ResidualAttentionBlock)]
    return sorted(found, key=lambda nm: (not nm[0].startswith("visual"),))  # stable: keeps block order


TEXT_LOSS_FORMS = ("official", "present-mean")


class CLIPTaskModel(TaskModel):
    """Classify by cosine similarity to the ensembled prompt embeddings of class names.

    Args:
        clip: an open_clip CLIP (fused layers are split here).
        tokenizer: open_clip tokenizer (callable: list of str -> LongTensor).
        class_names: one name per global label id.
        templates: per global label id, the prompt templates ("a photo of a {}.") of its dataset.
        task_classes: the global label ids of each task (its domain's classes).
        eval_classes: the classes ``predict`` scores without a task id: "all" (X-TAIL) or "seen" (class-incremental).
        loss_classes: the classes the loss normalises over: "task" (MTIL, X-TAIL) or "seen" (class-incremental).
        text_loss: weight of an extra text->image cross-entropy term (0 = image->text only).
        text_loss_form: how that term is computed (:data:`TEXT_LOSS_FORMS`): ``"official"`` as CoDyRA's and MoRAM's
            ``train_model`` (Artificer-AI-Lab/CoDyRA models/codyra.py @ c1691e4; Artificer-AI-Lab/MoRAM
            XTAIL/models/moram.py @ 05c3d61): ``F.cross_entropy(t_logits, mask)`` with ``t_logits`` the scaled
            similarities of every class text to the batch's images and ``mask`` the raw multi-hot class-image matches,
            so each class row sums the log-probabilities of its images (not normalised by their count) and the mean runs
            over every seen class, present in the batch or not; ``"present-mean"`` normalises each row by its positives
            and averages over the classes present in the batch (cl-suite's earlier form).
        train_templates: how many templates per class embed the text during training (the first ones).
    """

    def __init__(self, clip: nn.Module, tokenizer, class_names: Sequence[str], templates: Sequence[Sequence[str]],
                 task_classes: Sequence[Sequence[int]], backbone_name: str, *, eval_classes: str = "all",
                 loss_classes: str = "task", text_loss: float = 0.0, text_loss_form: str = "official",
                 label_smoothing: float = 0.0, train_templates: int = 1) -> None:  # fmt: skip
        super().__init__()
        if eval_classes not in ("all", "seen") or loss_classes not in ("task", "seen"):
            raise ValueError("eval_classes must be 'all' or 'seen'; loss_classes must be 'task' or 'seen'")
        if text_loss_form not in TEXT_LOSS_FORMS:
            raise ValueError(f"text_loss_form must be one of {', '.join(TEXT_LOSS_FORMS)}, got {text_loss_form!r}")
        if len(templates) != len(class_names):
            raise ValueError(f"{len(class_names)} class names but {len(templates)} template lists")
        self.clip = split_fused_layers(clip)
        self.tokenizer = tokenizer
        self.class_names, self.templates = list(class_names), [tuple(t) for t in templates]
        self.task_classes = [tuple(c) for c in task_classes]
        self.backbone_name = backbone_name
        self.eval_classes, self.loss_classes = eval_classes, loss_classes
        self.text_loss, self.label_smoothing, self.train_templates = text_loss, label_smoothing, train_templates
        self.text_loss_form = text_loss_form
        self.register_buffer("seen", torch.zeros(len(class_names), dtype=torch.bool))
        self._tokens: dict[tuple[int, int], torch.Tensor] = {}
        self._text_cache: dict[tuple[int, ...], torch.Tensor] = {}

    # -- text side ---------------------------------------------------------------------------------------------
    def train(self, mode: bool = True):
        self._text_cache.clear()  # weights may change from here on: cached text embeddings are stale
        return super().train(mode)

    def on_task_start(self, task: Task) -> None:
        self.seen[list(task.classes)] = True
        self._text_cache.clear()

    def _prompt_tokens(self, cls: int, n_templates: int) -> torch.Tensor:
        key = (cls, n_templates)
        if key not in self._tokens:
            prompts = [t.format(self.class_names[cls]) for t in self.templates[cls][:n_templates]]
            self._tokens[key] = self.tokenizer(prompts)
        return self._tokens[key]

    def text_features(self, classes: Sequence[int]) -> torch.Tensor:
        """(len(classes), D) unit-norm class embeddings: the normalised mean of the normalised prompt embeddings
        (CLIP's prompt ensembling). Training uses the first ``train_templates`` templates; eval uses all, cached when no gradient is taken
        (EWC-style importance passes run in eval mode with gradients and must get a fresh graph each batch)."""
        key = tuple(int(c) for c in classes)
        cache = not self.training and not torch.is_grad_enabled()  # a graph-carrying tensor must not be reused
        if cache and key in self._text_cache:
            return self._text_cache[key]
        n = self.train_templates if self.training else 10**6
        tokens = [self._prompt_tokens(c, n) for c in key]
        device = self.seen.device
        emb = F.normalize(self.clip.encode_text(torch.cat(tokens).to(device)), dim=-1)
        sizes = [len(t) for t in tokens]
        feats = torch.stack([chunk.mean(0) for chunk in emb.split(sizes)])
        feats = F.normalize(feats, dim=-1)
        if cache:
            self._text_cache[key] = feats
        return feats

    # -- image side --------------------------------------------------------------------------------------------
    def features(self, batch: Batch) -> torch.Tensor:
        """(B, D) unit-norm image embeddings."""
        return F.normalize(self.clip.encode_image(batch["x"]), dim=-1)

    def _scale(self) -> torch.Tensor:
        return self.clip.logit_scale.exp().clamp(max=100)

    def _scores(self, batch: Batch, classes: Sequence[int]) -> torch.Tensor:
        return self._scale() * self.features(batch) @ self.text_features(classes).T

    def logits(self, batch: Batch) -> torch.Tensor:
        """Scaled similarities to every class of the global label space, (B, num_classes)."""
        return self._scores(batch, range(len(self.class_names)))

    def _allowed(self, task_id: int | None) -> list[int]:
        if task_id is not None:
            return list(self.task_classes[task_id])
        if self.eval_classes == "seen" and bool(self.seen.any()):
            return self.seen.nonzero().flatten().tolist()
        return list(range(len(self.class_names)))

    def _class_task(self, device: torch.device) -> torch.Tensor:
        """Global class id -> index of the task that introduces it (-1 if none)."""
        owner = torch.full((len(self.class_names),), -1, dtype=torch.long, device=device)
        for t, classes in enumerate(self.task_classes):
            owner[list(classes)] = t
        return owner

    def predict(self, batch: Batch, task_id: int | None) -> torch.Tensor:
        """Scores over the global label space; classes outside the allowed set get the dtype's minimum."""
        classes = self._allowed(task_id)
        scores = self._scores(batch, classes)
        full = scores.new_full((scores.shape[0], len(self.class_names)), torch.finfo(scores.dtype).min)
        return full.index_copy(1, torch.tensor(classes, device=scores.device), scores)

    def loss(self, batch: Batch, task: Task) -> torch.Tensor:
        """Image->text cross-entropy over the allowed classes, plus ``text_loss`` x text->image cross-entropy.

        ``loss_classes="task"`` (MTIL, X-TAIL): each sample is scored within its own task's classes, so a batch
        that mixes tasks (joint training, replay) is handled as the protocol means: one cross-entropy per task
        present, weighted by its samples. ``"seen"``: every sample over all seen classes."""
        y = batch["y"]
        image = self.features(batch)
        if self.loss_classes != "task":
            return self._group_loss(image, y, self.seen.nonzero().flatten().tolist(), task)
        sample_task = self._class_task(y.device)[y]
        if bool((sample_task < 0).any()):
            raise ValueError(f"a label in a batch of task {task.name!r} belongs to no task of the protocol")
        total = image.new_zeros(())
        for t in sample_task.unique().tolist():
            rows = sample_task == t
            total = total + rows.sum() * self._group_loss(image[rows], y[rows], list(self.task_classes[t]), task)
        return total / len(y)

    def _group_loss(self, image: torch.Tensor, y: torch.Tensor, classes: list[int], task: Task) -> torch.Tensor:
        lookup = torch.full((len(self.class_names),), -1, dtype=torch.long, device=y.device)
        lookup[classes] = torch.arange(len(classes), device=lookup.device)
        target = lookup[y]
        if bool((target < 0).any()):
            raise ValueError(f"a label of task {task.name!r} is outside the classes the loss allows")
        logits = self._scale() * image @ self.text_features(classes).T
        loss = F.cross_entropy(logits, target, label_smoothing=self.label_smoothing)
        if self.text_loss > 0:
            loss = loss + self.text_loss * self._text_to_image_loss(logits.T, target)
        return loss

    def _text_to_image_loss(self, t2i: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of each class text over the batch's images; ``t2i`` is (classes scored, B)."""
        matches = (torch.arange(len(t2i), device=target.device)[:, None] == target[None, :]).to(t2i.dtype)
        log_p = t2i.log_softmax(1)
        if self.text_loss_form == "official":
            # The official text set is every seen class (earlier tasks' rows have no match and add 0 to the sum, but
            # count in the mean); this group's rows are the classes it scores.
            return -(matches * log_p).sum() / max(int(self.seen.sum()), len(t2i))
        present = matches.sum(1) > 0
        return -(matches[present] / matches[present].sum(1, keepdim=True) * log_p[present]).sum(1).mean()

    # -- adapter view ------------------------------------------------------------------------------------------
    def linear_targets(self) -> list[LinearTarget]:
        targets = []
        patch = getattr(self.clip.visual, "conv1", None)
        if isinstance(patch, PatchLinear):
            targets.append(LinearTarget("clip.visual.conv1.proj", "patch", patch.proj))
        for name, block in _residual_blocks(self.clip):
            targets += block_targets(f"clip.{name}", block)
        return targets

    def blocks(self) -> list[BlockView]:
        """Vision-tower blocks first, then text-tower blocks (numbered on)."""
        return [BlockView(i, b, b.attn, b.ln_2, b.mlp) for i, (_, b) in enumerate(_residual_blocks(self.clip))]


def block_targets(name: str, block: nn.Module) -> list[LinearTarget]:
    """The adapter targets of one open_clip residual block named ``name``: the split attention's q, k, v, o (once
    :func:`split_fused_layers` has run) and the MLP's c_fc (fc1) and c_proj (fc2)."""
    targets = []
    if isinstance(block.attn, SplitAttention):
        targets += [LinearTarget(f"{name}.attn.{role}", role, getattr(block.attn, role)) for role in ("q", "k", "v", "o")]
    targets.append(LinearTarget(f"{name}.mlp.c_fc", "fc1", block.mlp.c_fc))
    targets.append(LinearTarget(f"{name}.mlp.c_proj", "fc2", block.mlp.c_proj))
    return targets


def load_clip(spec: str):
    """``(clip, tokenizer, image_size)`` for ``tiny-clip[@<path>]`` or ``open_clip:<arch>@<pretrained>``.

    ``<pretrained>`` is an open_clip hub tag (``openai``, ``laion2b_s34b_b88k``; needs the network the first time)
    or a local checkpoint path (always works); ``open_clip:<arch>`` alone is randomly initialised.
    """
    if spec == "tiny-clip" or spec.startswith("tiny-clip@"):
        from cl_suite.models import tiny_clip

        path = spec.partition("@")[2] or tiny_clip.WEIGHTS
        return tiny_clip.load(path), tiny_clip.tokenizer(), tiny_clip.IMAGE_SIZE
    if not spec.startswith("open_clip:"):
        raise ValueError(f"unknown CLIP backbone {spec!r}; accepted: tiny-clip[@path], open_clip:<arch>@<pretrained or path>")
    import open_clip

    arch, _, pretrained = spec.removeprefix("open_clip:").partition("@")
    if arch not in open_clip.list_models():
        import difflib

        close = difflib.get_close_matches(arch, open_clip.list_models(), n=3)
        raise ValueError(f"unknown open_clip architecture {arch!r}" + (f"; did you mean {', '.join(close)}?" if close else ""))
    try:
        model = open_clip.create_model(arch, pretrained=pretrained or None)
    except RuntimeError as e:
        raise FileNotFoundError(
            f"cannot load open_clip weights {pretrained!r} for {arch}: {e}. Download them once online "
            f"(open_clip.create_model({arch!r}, pretrained={pretrained!r})) or pass a local file: open_clip:{arch}@/path/to/weights.pt"
        ) from e
    image_size = model.visual.image_size
    return model.eval(), open_clip.get_tokenizer(arch), image_size[0] if isinstance(image_size, tuple) else image_size
