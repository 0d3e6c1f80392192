"""Continual organ segmentation (LoCo-PVT's setting, ../shared/reference/strategies.md §6.6): a base task trains the
segmentation transformer, each later task adds new organs, and the model must segment the new ones without
forgetting the old ones.

Protocol, for both scenarios: each task brings its own cases (like a new dataset) labelled only for its own organs
(partial labels: other organs are background in its label maps, train and test alike). Volumes are segmented slice by
slice; Dice is computed per case over its slices (cl_suite.dice). The score of a task is the mean Dice (percent)
over its organs after each step, so the score matrix gives Dice-based forgetting and BWT, and the organ-weighted
``seg_old``/``seg_new``/``seg_all`` summaries; per-organ Dice is recorded as ``dice/<organ>``.

* ``organ-tiny``: generated CT-like phantoms (scenarios.organ_phantoms), a base task of 4 organs then 2 tasks of 3;
  minutes on a CPU. ``--tiny`` keeps 2 tasks, 1 training and 1 test case of 6 slices each.
* ``organ-nifti``: NIfTI folders on disk (scenarios.organ_nifti) with a bundled protocol (``btcv`` 6-3-4, ``amos``
  5-5-5, ``totalseg`` by body region) or your own YAML file.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

from cl_suite.api import Context, Scenario, Task, TaskModel
from cl_suite.config import ConfigError
from cl_suite.dice import evaluate_dice
from cl_suite.models.segmentation import SegmentationModel, SegTransformer
from scenarios import organ_nifti
from scenarios.organ_phantoms import ORGAN_NAMES, make_case, window

SUMMARY = ("seg_all", "seg_old", "seg_new", "forgetting", "bwt", "last")


class SliceDataset(Dataset):
    """Items ``{"x": (1, H, W) in [0, 1], "y": (H, W) global organ ids, "case": case id, "task": task index}``."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, case: torch.Tensor, task: int) -> None:
        if not len(x) == len(y) == len(case):
            raise ValueError(f"x, y and case must align, got {len(x)}, {len(y)}, {len(case)}")
        self.x, self.y, self.case, self.task = x, y, case, torch.tensor(task)

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"x": self.x[i], "y": self.y[i], "case": self.case[i], "task": self.task}


def _stack(parts: list[tuple[torch.Tensor, torch.Tensor, int]], task: int) -> SliceDataset:
    xs, ys, cases = zip(*parts)
    case_ids = torch.cat([torch.full((len(y),), c, dtype=torch.long) for y, c in zip(ys, cases)])
    return SliceDataset(torch.cat(xs), torch.cat(ys), case_ids, task)


def _partial(labels: np.ndarray, organ_ids: list[int]) -> np.ndarray:
    """Keep only the task's organs; every other label becomes background (the task's partial labels)."""
    return np.where(np.isin(labels, organ_ids), labels, 0)


@dataclass
class ModelConfig:
    """The segmentation transformer's size (shared by both scenarios)."""

    image_size: int = 48
    patch: int = 4
    dim1: int = 32
    dim2: int = 64
    depth1: int = 1
    depth2: int = 1
    decoder_depth: int = 1
    heads: int = 2
    out_channels: int = 16
    dice_weight: float = 1.0  # loss = cross-entropy + dice_weight x soft Dice


class _OrganScenario(Scenario):
    setting = "seg"
    provides = frozenset({"linear_targets", "blocks"})
    metrics = {"dice": "max"}
    summary = SUMMARY

    task_organs: list[tuple[str, ...]]

    @property
    def organ_ids(self) -> dict[str, int]:
        """Global organ ids, 1.. in task order (0 is background)."""
        return {name: i for i, name in enumerate((o for t in self.task_organs for o in t), start=1)}

    @property
    def backbone(self) -> str:
        c = self.config
        return f"seg-pvt2d(img={c.image_size},p={c.patch},d={c.dim1}/{c.dim2},depth={c.depth1}/{c.depth2}/{c.decoder_depth})"

    def _task(self, index: int, train: SliceDataset, test: SliceDataset) -> Task:
        organs = self.task_organs[index]
        ids = self.organ_ids
        return Task(index=index, name=f"{'base' if index == 0 else f'step{index}'}-{'-'.join(organs)}"[:80],
                    train=train, test=test, classes=tuple(ids[o] for o in organs),
                    meta={"organs": list(organs), "old_organs": [o for t in self.task_organs[:index] for o in t]})  # fmt: skip

    def build_model(self, ctx: Context) -> TaskModel:
        c = self.config
        net = SegTransformer(image_size=c.image_size, patch=c.patch, dims=(c.dim1, c.dim2),
                             depths=(c.depth1, c.depth2), decoder_depth=c.decoder_depth, heads=c.heads,
                             out_channels=c.out_channels)  # fmt: skip
        ids = self.organ_ids
        return SegmentationModel(net, [[ids[o] for o in t] for t in self.task_organs], len(ids), self.backbone,
                                 dice_weight=c.dice_weight)  # fmt: skip

    def evaluate(self, predict, task: Task, ctx: Context) -> dict[str, float]:
        return evaluate_dice(predict, task, ctx)


@dataclass
class OrganTinyConfig(ModelConfig):
    """Organ groups per task (comma-separated names from scenarios.organ_phantoms.ORGAN_NAMES), explicit."""

    tasks: tuple[str, ...] = ("liver,spleen,kidney_right,kidney_left", "aorta,ivc,vertebra",
                              "stomach,pancreas,gallbladder")  # fmt: skip
    slices: int = 10
    train_cases: int = 6
    test_cases: int = 2
    noise: float = 10.0  # HU
    data_seed: int = 0


class OrganTiny(_OrganScenario):
    """Generated CT-like phantoms: base task (4 organs) + 2 tasks of 3 new organs, a small seg transformer."""

    Config = OrganTinyConfig
    train_defaults = {"epochs": 15, "batch_size": 6, "lr": 4e-3, "eval_batch_size": 64}

    def __init__(self, config: OrganTinyConfig | None = None, *, tiny: bool = False) -> None:
        super().__init__(config, tiny=tiny)
        groups = [tuple(o.strip() for o in t.split(",") if o.strip()) for t in self.config.tasks]
        organs = [o for g in groups for o in g]
        unknown = sorted(set(organs) - set(ORGAN_NAMES))
        if unknown or not groups or any(not g for g in groups) or len(set(organs)) != len(organs):
            raise ConfigError(f"scenario.tasks must be non-empty comma-separated groups of distinct organs from "
                              f"{', '.join(ORGAN_NAMES)}; got {list(self.config.tasks)}")  # fmt: skip
        self.task_organs = groups[:2] if tiny else groups

    def tasks(self) -> list[Task]:
        c = self.config
        slices, n_train, n_test = (6, 1, 1) if self.tiny else (c.slices, c.train_cases, c.test_cases)
        phantom_ids = {name: k for k, name in enumerate(ORGAN_NAMES, start=1)}
        lut = np.zeros(len(ORGAN_NAMES) + 1, dtype=np.int64)
        for name, gid in self.organ_ids.items():
            lut[phantom_ids[name]] = gid
        tasks = []
        for t, organs in enumerate(self.task_organs):
            ids = [self.organ_ids[o] for o in organs]
            splits = []
            for split, count in (("train", n_train), ("test", n_test)):
                parts = []
                for i in range(count):
                    seed = c.data_seed * 1_000_003 + t * 1000 + (500 if split == "test" else 0) + i
                    hu, labels = make_case(seed, size=c.image_size, slices=slices, noise=c.noise)
                    x = torch.from_numpy(window(hu)).float()[:, None]
                    y = torch.from_numpy(_partial(lut[labels], ids))
                    parts.append((x, y, seed))
                splits.append(_stack(parts, t))
            tasks.append(self._task(t, *splits))
        return tasks


@dataclass
class OrganNiftiConfig(ModelConfig):
    """``root``: the dataset folder; ``protocol``: a bundled name or a YAML path (scenarios/organ_protocols)."""

    root: str = ""
    protocol: str = "btcv"
    image_size: int = 128
    patch: int = 8
    depth1: int = 2
    depth2: int = 2
    test_fraction: float = 0.2
    split_seed: int = 0
    slice_margin: int = 2  # slices kept beyond the first/last that show a task organ


class OrganNifti(_OrganScenario):
    """Organ segmentation on NIfTI volumes on disk; each task gets a disjoint share of the training cases."""

    Config = OrganNiftiConfig
    train_defaults = {"epochs": 20, "batch_size": 16, "lr": 1e-3, "eval_batch_size": 32}

    def __init__(self, config: OrganNiftiConfig | None = None, *, tiny: bool = False) -> None:
        super().__init__(config, tiny=tiny)
        try:
            self.protocol = organ_nifti.load_protocol(self.config.protocol)
        except ValueError as e:
            raise ConfigError(str(e)) from e
        self.task_organs = list(self.protocol.tasks[:2] if tiny else self.protocol.tasks)
        if not self.config.root:
            raise ConfigError(f"organ-nifti needs scenario.root=<folder> holding {self.protocol.source or 'the data'}"
                              f" (layout {self.protocol.layout!r})")  # fmt: skip

    def split_cases(self, cases: list) -> tuple[list[list], list]:
        """(training cases per task, test cases): a seeded permutation, test first, the rest dealt to tasks."""
        order = np.random.default_rng(self.config.split_seed).permutation(len(cases))
        n_test = max(1, round(len(cases) * self.config.test_fraction))
        if len(cases) - n_test < len(self.task_organs):
            raise ConfigError(f"{len(cases)} cases are too few for {len(self.task_organs)} tasks and a test split")
        test = [cases[i] for i in sorted(order[:n_test])]
        train = [cases[i] for i in order[n_test:]]
        per_task = [sorted(train[t :: len(self.task_organs)], key=lambda c: c.case) for t in range(len(self.task_organs))]
        return per_task, test

    def _load(self, files, case_index: int, ids: list[int], tiny: bool):
        c = self.config
        image, labels = organ_nifti.read_case(files, self.protocol, self.organ_ids)
        labels = _partial(labels, ids)
        keep = organ_nifti.slices_with(labels, ids, c.slice_margin)
        if tiny:
            keep = keep[:8]
        x, y = organ_nifti.to_slices(image, labels, c.image_size, self.protocol.window, keep)
        return x, y, case_index

    def tasks(self) -> list[Task]:
        try:
            cases = organ_nifti.find_cases(self.config.root, self.protocol)
        except FileNotFoundError as e:
            raise ConfigError(str(e)) from e
        per_task, test = self.split_cases(cases)
        index = {c.case: i for i, c in enumerate(cases)}
        tasks = []
        for t, organs in enumerate(self.task_organs):
            ids = [self.organ_ids[o] for o in organs]
            train_files = per_task[t][:2] if self.tiny else per_task[t]
            test_files = test[:1] if self.tiny else test
            parts = [[p for p in (self._load(f, index[f.case], ids, self.tiny) for f in files) if len(p[1])]
                     for files in (train_files, test_files)]  # fmt: skip
            if not parts[0] or not parts[1]:
                raise ConfigError(f"task {t}: no slice shows any of {list(organs)} in the "
                                  f"{'training' if not parts[0] else 'test'} cases under {self.config.root}")  # fmt: skip
            tasks.append(self._task(t, _stack(parts[0], t), _stack(parts[1], t)))
        return tasks
