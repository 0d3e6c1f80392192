"""CLIP image task sequences: the MTIL / X-TAIL protocols on small bundled domains (clip-tiny, clip-tiny-xtail).

Each task is one *domain* with its own class names and prompt templates; labels are global (domain offset + local
label) so one CLIP task model (cl_suite.models.clip) scores every protocol:

- ``clip-tiny`` is MTIL-style (ZSCL, Zheng et al. 2023): task-incremental (``til``), each domain classified within
  its own class names, scored with Transfer / Avg. / Last (../shared/reference/benchmarks.md §1-2).
- ``clip-tiny-xtail`` is X-TAIL-style (RAIL, Xu et al. 2024): no domain id at test time, every image is classified
  over the union of all domains' class names, including domains not learned yet. It runs in the ``dil`` setting
  (the label space is fixed from the start; the runner passes no task id).

The tiny domains are real bundled images where they exist: scikit-learn's handwritten digits, crops of
scikit-image's brick / grass / gravel photographs, scikit-image's LFW subset (faces vs. non-faces), plus generated
shapes. The backbone is the project's tiny CLIP, pretrained on generated captions (``cl-suite pretrain tiny-clip``).
Full-scale protocols (mtil, xtail, clip-cifar100, imagenet-r) are in scenarios/clip_datasets.py.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
from torch.utils.data import Dataset

from cl_suite.api import Context, Scenario, Task, TaskModel
from cl_suite.data import TensorDictDataset, class_subset, stratified_split
from cl_suite.models.classifier import evaluate_accuracy

TINY_TASKS, TINY_EXAMPLES = 2, 64
OBJECT_TEMPLATES = ("a photo of a {}.", "a {}", "a picture of a {}.")


@dataclass(frozen=True)
class Domain:
    """One dataset of a CLIP sequence: datasets yield ``{"x", "y"}`` with *local* labels 0..len(class_names)-1."""

    name: str
    class_names: tuple[str, ...]
    templates: tuple[str, ...]
    train: Dataset
    test: Dataset
    meta: dict = field(default_factory=dict)  # more task meta: split, shots, the protocol's lr_scale


class OffsetLabels(Dataset):
    """A domain's dataset with its labels moved into the global label space."""

    def __init__(self, dataset: Dataset, offset: int) -> None:
        self.dataset, self.offset = dataset, offset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> dict:
        item = self.dataset[i]
        # a 0-dim int64 tensor, like every classification dataset here, so mixed datasets (replay buffers) collate
        return {"x": item["x"], "y": torch.tensor(int(item["y"]) + self.offset)}


class ClipScenario(Scenario):
    """Shared machinery: domains -> tasks over one global label space -> a CLIPTaskModel. Subclasses give
    ``domains()`` and their config (with at least ``backbone``, ``text_loss``, ``text_loss_form``, ``label_smoothing``)."""

    setting = "til"
    provides = frozenset({"features", "logits", "linear_targets", "blocks"})
    metrics = {"acc": "max"}
    summary = ("mtil_transfer", "mtil_avg", "mtil_last", "bwt", "forgetting")
    eval_classes = "all"  # without a task id: every class (X-TAIL); class-incremental scenarios use "seen"
    loss_classes = "task"  # MTIL / X-TAIL train over the current domain's class names

    def __init__(self, config=None, *, tiny: bool = False) -> None:
        super().__init__(config, tiny=tiny)
        self._tasks: list[Task] | None = None

    @property
    def backbone(self) -> str:
        return self.config.backbone

    def domains(self) -> list[Domain]:
        raise NotImplementedError

    def tasks(self) -> list[Task]:
        if self._tasks is None:
            self._tasks, offset = [], 0
            for i, d in enumerate(self.domains()):
                classes = tuple(range(offset, offset + len(d.class_names)))
                self._tasks.append(Task(
                    index=i, name=d.name, train=OffsetLabels(d.train, offset), test=OffsetLabels(d.test, offset),
                    classes=classes, meta={"class_names": list(d.class_names), "templates": list(d.templates), **d.meta},
                ))  # fmt: skip
                offset += len(d.class_names)
        return self._tasks

    def build_model(self, ctx: Context) -> TaskModel:
        from cl_suite.models.clip import CLIPTaskModel, load_clip

        tasks = self.tasks()
        names = [n for t in tasks for n in t.meta["class_names"]]
        templates = [tuple(t.meta["templates"]) for t in tasks for _ in t.meta["class_names"]]
        clip, tokenizer, _ = load_clip(self.config.backbone)
        c = self.config
        return CLIPTaskModel(clip, tokenizer, names, templates, [t.classes for t in tasks], self.backbone,
                             eval_classes=self.eval_classes, loss_classes=self.loss_classes, text_loss=c.text_loss,
                             text_loss_form=c.text_loss_form,
                             label_smoothing=c.label_smoothing)  # fmt: skip

    def evaluate(self, predict, task: Task, ctx: Context) -> dict[str, float]:
        return evaluate_accuracy(predict, task, ctx)


# -- tiny domains ------------------------------------------------------------------------------------------------
def _split_dataset(x: torch.Tensor, y: np.ndarray, seed: int, tiny: bool, test_fraction: float = 0.25):
    train_idx, test_idx = stratified_split(y, test_fraction, seed)
    classes = sorted(set(y.tolist()))
    limit = TINY_EXAMPLES if tiny else None
    train_idx, test_idx = (class_subset(y, idx, classes, limit, seed) for idx in (train_idx, test_idx))
    yt = torch.as_tensor(y, dtype=torch.long)
    return TensorDictDataset(x[train_idx], yt[train_idx]), TensorDictDataset(x[test_idx], yt[test_idx])


def digits_domain(seed: int, tiny: bool) -> Domain:
    """scikit-learn's 1,797 handwritten 8x8 digits, upsampled to the model's 32x32."""
    from sklearn.datasets import load_digits

    from cl_suite.models.tiny_clip import to_tensor

    images, labels = load_digits(return_X_y=True)
    train, test = _split_dataset(to_tensor(images.reshape(-1, 8, 8) / 16.0), labels, seed, tiny)
    templates = ("a photo of the digit {}.", "the digit {}", "an image of the digit {}.")
    return Domain("digits", tuple("0123456789"), templates, train, test)


def faces_domain(seed: int, tiny: bool) -> Domain:
    """scikit-image's LFW subset: 100 face crops and 100 non-face patches (25x25 grey)."""
    from skimage.data import lfw_subset

    from cl_suite.models.tiny_clip import to_tensor

    images = lfw_subset().astype(np.float32)
    labels = np.array([1] * 100 + [0] * 100)
    train, test = _split_dataset(to_tensor(images), labels, seed, tiny)
    return Domain("faces", ("background", "face"), OBJECT_TEMPLATES, train, test)


def textures_domain(seed: int, tiny: bool, crop: int = 96, per_class: tuple[int, int] = (80, 30)) -> Domain:
    """Random crops of scikit-image's brick, grass and gravel photographs; train crops come from the top three
    quarters of each photograph and test crops from the bottom quarter, so they never overlap."""
    from skimage import data

    from cl_suite.models.tiny_clip import to_tensor

    names = ("brick", "grass", "gravel")
    rng = np.random.default_rng(seed)
    splits = []
    for rows, n in (((0, 384), per_class[0]), ((384, 512), per_class[1])):
        xs, ys = [], []
        for label, name in enumerate(names):
            image = getattr(data, name)().astype(np.float32) / 255.0
            for _ in range(min(n, TINY_EXAMPLES // len(names) + 1) if tiny else n):
                top = int(rng.integers(rows[0], rows[1] - crop + 1))
                left = int(rng.integers(0, image.shape[1] - crop + 1))
                xs.append(image[top : top + crop, left : left + crop])
                ys.append(label)
        splits.append(TensorDictDataset(to_tensor(np.stack(xs)), torch.tensor(ys)))
    templates = ("a photo of a {} texture.", "a {} texture", "an image of a {} texture.")
    return Domain("textures", names, templates, splits[0], splits[1])


def shapes_domain(seed: int, tiny: bool, per_class: int = 120) -> Domain:
    """Generated shapes in every colour, fill, size and position (cl_suite.synth_images), named by shape."""
    from cl_suite import synth_images as S
    from cl_suite.models.tiny_clip import to_tensor

    rng = np.random.default_rng(10_000 + seed)
    images, labels = [], []
    for _ in range(16 if tiny else per_class):
        for label, kind in enumerate(S.SHAPES):
            size, colour = S.SIZES[int(rng.integers(2))], list(S.COLOURS)[int(rng.integers(len(S.COLOURS)))]
            position = "center" if size == "large" else S.POSITIONS[int(rng.integers(len(S.POSITIONS)))]
            images.append(S.shape(rng, kind, colour, S.FILLS[int(rng.integers(len(S.FILLS)))], size, position))
            labels.append(label)
    train, test = _split_dataset(to_tensor(np.stack(images)), np.array(labels), seed, tiny)
    return Domain("shapes", S.SHAPES, OBJECT_TEMPLATES, train, test)


TINY_DOMAINS: dict[str, Callable[[int, bool], Domain]] = {
    "digits": digits_domain, "faces": faces_domain, "shapes": shapes_domain, "textures": textures_domain,
}  # fmt: skip


@dataclass
class ClipTinyConfig:
    domains: tuple[str, ...] = ("digits", "faces", "shapes", "textures")  # task order
    backbone: str = "tiny-clip"
    split_seed: int = 0
    text_loss: float = 0.0  # weight of the text->image loss term (CoDyRA and MoRAM's runners: 1.0)
    text_loss_form: Literal["official", "present-mean"] = "official"  # official (CoDyRA/MoRAM train_model) | present-mean (see CLIPTaskModel)
    label_smoothing: float = 0.0


class ClipTiny(ClipScenario):
    """MTIL-style CLIP sequence on 4 bundled domains (digits, LFW faces, shapes, textures); tiny CLIP; til."""

    setting = "til"
    Config = ClipTinyConfig
    train_defaults = {"max_steps": 60, "batch_size": 32, "lr": 1e-4, "weight_decay": 0.0}

    def domains(self) -> list[Domain]:
        names = list(self.config.domains)
        unknown = [n for n in names if n not in TINY_DOMAINS]
        if unknown or len(set(names)) != len(names) or not names:
            raise ValueError(f"domains must be distinct names from {', '.join(TINY_DOMAINS)}; got {names}")
        if self.tiny:
            names = names[:TINY_TASKS]
        return [TINY_DOMAINS[n](self.config.split_seed, self.tiny) for n in names]


class ClipTinyXTail(ClipTiny):
    """X-TAIL-style: the clip-tiny domains, predicted over the union of all their labels without a domain id; dil."""

    setting = "dil"
    eval_classes = "all"
