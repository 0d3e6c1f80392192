"""Continual organ segmentation (LoCo-PVT's setting, ../shared/reference/strategies.md §6.6): a base task trains the
segmentation transformer, each later task adds new organs, and the model must segment the new ones without
forgetting the old ones.

Protocol, for both scenarios: each task brings its own cases (like a new dataset) labelled only for its own organs
(partial labels: other organs are background in its label maps, train and test alike). Dice and HD95 are computed
per organ over whole cases with MONAI's metrics (cl_suite.dice). The score of a task is the mean Dice (percent)
over its organs after each step, so the score matrix gives Dice-based forgetting and BWT, and the organ-weighted
``seg_old``/``seg_new``/``seg_all`` summaries; per-organ Dice and HD95 are recorded as ``dice/<organ>``,
``hd95/<organ>``.

* ``organ-tiny``: generated CT-like phantoms (scenarios.organ_phantoms), a base task of 4 organs then 2 tasks of 3,
  segmented slice by slice by the 2D model; minutes on a CPU. ``--tiny`` keeps 2 tasks, 1 training and 1 test case
  of 6 slices each.
* ``organ-nifti``: NIfTI folders on disk loaded through MONAI (scenarios.organ_nifti) with a bundled protocol
  (``btcv`` 6-3-4, ``amos`` 5-5-5 on its CT cases, ``totalseg`` by body region) or your own YAML file; the 3D PVT
  (``scenario.model=pvt3d``, default: training windows, sliding-window inference on whole volumes) or the 2D slice
  model (``slice2d``). ``check_data()`` reads every header the run will use first, so bad data is one line, exit 2.
  ``--tiny`` keeps 2 tasks, 2 training cases per task, 1 test case, and windows of at most 32³.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch.utils.data import Dataset

from cl_suite.api import Context, MissingData, Scenario, Task, TaskModel
from cl_suite.config import ConfigError
from cl_suite.dice import evaluate_dice
from cl_suite.models.pvt3d import PVT3D
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

    spacing: torch.Tensor | None = None  # (N, 3) mm per axis (slice, row, column) of each slice, when known

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        item = {"x": self.x[i], "y": self.y[i], "case": self.case[i], "task": self.task}
        if self.spacing is not None:
            item["spacing"] = self.spacing[i]
        return item


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
    metrics = {"dice": "max", "hd95": "min"}
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
    """``root``: the dataset folder; ``protocol``: a bundled name or a YAML path (scenarios/organ_protocols).

    ``model``: ``pvt3d`` (LoCo-PVT's setting: a 3D pyramid ViT on ``roi`` windows, sliding-window inference over
    whole volumes) or ``slice2d`` (the 2D slice-wise pyramid ViT of organ-tiny). ``spacing``: ``protocol`` (the
    protocol's target spacing), ``native`` (no resampling) or three sizes in mm (x, y, z).
    """

    root: str = ""
    protocol: str = "btcv"
    model: Literal["pvt3d", "slice2d"] = "pvt3d"
    spacing: str = "protocol"
    affine_tolerance: float = 1e-3  # mm: largest difference allowed between image and label affines (in RAS)
    allow_missing_masks: bool = False  # TotalSegmentator: score a case without the organs whose mask is missing
    image_size: int = 128
    patch: int = 8
    depth1: int = 2
    depth2: int = 2
    test_fraction: float = 0.2
    split_seed: int = 0
    slice_margin: int = 2  # slice2d: slices kept beyond the first/last that show a task organ
    roi: tuple[int, ...] = (96, 96, 96)  # pvt3d window (MONAI's BTCV tutorial's 96³); --tiny caps it at 32³
    pvt_patch: int = 4
    pvt_dims: tuple[int, ...] = (32, 64, 128)
    pvt_depths: tuple[int, ...] = (2, 2, 2)
    pvt_sr: tuple[int, ...] = (4, 2, 1)  # spatial-reduction ratio per stage (PVT's 8-4-2-1, one stage fewer)
    pvt_heads: tuple[int, ...] = (1, 2, 4)
    samples_per_volume: int = 4  # pvt3d training crops per volume per epoch (MONAI tutorial: num_samples 4)
    sw_overlap: float = 0.25  # sliding-window overlap (MONAI's default)


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
        self.spacing = self._target_spacing()
        self.roi = tuple(min(r, 32) for r in self.config.roi) if tiny else tuple(self.config.roi)
        if self.config.model == "pvt3d":
            self._pvt()  # size errors are config errors, before any data is read

    def _target_spacing(self) -> tuple[float, float, float] | None:
        text = self.config.spacing.strip().lower()
        if text == "protocol":
            return self.protocol.spacing
        if text == "native":
            return None
        try:
            values = tuple(float(v) for v in text.split(","))
        except ValueError:
            values = ()
        if len(values) != 3 or min(values) <= 0:
            raise ConfigError(f"scenario.spacing must be 'protocol', 'native' or 3 sizes in mm like 1.5,1.5,2; "
                              f"got {self.config.spacing!r}")  # fmt: skip
        return values

    def _pvt(self) -> PVT3D:
        c = self.config
        try:
            return PVT3D(roi=self.roi, patch=c.pvt_patch, dims=c.pvt_dims, depths=c.pvt_depths, sr=c.pvt_sr,
                         heads=c.pvt_heads, decoder_depth=c.decoder_depth, out_channels=c.out_channels)  # fmt: skip
        except ValueError as e:
            raise ConfigError(f"scenario.pvt_*/roi: {e}") from e

    @property
    def backbone(self) -> str:
        c = self.config
        if c.model == "slice2d":
            return super().backbone
        dims = "/".join(map(str, c.pvt_dims))
        return (f"seg-pvt3d(roi={'x'.join(map(str, self.roi))},p={c.pvt_patch},d={dims},"
                f"depth={'/'.join(map(str, c.pvt_depths))}/{c.decoder_depth},sr={'/'.join(map(str, c.pvt_sr))})")

    def build_model(self, ctx: Context) -> TaskModel:
        if self.config.model == "slice2d":
            return super().build_model(ctx)
        ids = self.organ_ids
        return SegmentationModel(self._pvt(), [[ids[o] for o in t] for t in self.task_organs], len(ids), self.backbone,
                                 dice_weight=self.config.dice_weight, roi=self.roi,
                                 overlap=self.config.sw_overlap)  # fmt: skip

    # -- cases ---------------------------------------------------------------------------------------------------
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

    def selected_cases(self) -> tuple[list[list], list]:
        """The CT cases the run reads: (training cases per task, test cases), cut down under --tiny."""
        if not self.config.root:
            raise MissingData(f"organ-nifti needs scenario.root=<folder> holding {self.protocol.source or 'the data'}"
                              f" (layout {self.protocol.layout!r})")  # fmt: skip
        cases, _ = organ_nifti.split_modality(organ_nifti.find_cases(self.config.root, self.protocol), self.protocol)
        if not cases:
            raise organ_nifti.BadData(f"no CT cases under {self.config.root} (protocol {self.protocol.name}: "
                                      f"{self.protocol.ct_cases.source if self.protocol.ct_cases else ''})")  # fmt: skip
        per_task, test = self.split_cases(cases)
        if self.tiny:
            per_task, test = [files[:2] for files in per_task], test[:1]
        return per_task, test

    def check_data(self) -> None:
        """Headers only: every case the run reads has its labels on the image's grid (in RAS) and all its masks."""
        per_task, test = self.selected_cases()
        organs = list(self.organ_ids)
        for files in [f for task in per_task for f in task] + test:
            organ_nifti.check_case(files, self.protocol, organs, tolerance=self.config.affine_tolerance,
                                   allow_missing=self.config.allow_missing_masks)  # fmt: skip

    def describe(self) -> dict:
        """Each task's organs with their global ids and where their voxels come from (label id or mask file)."""
        ids, p = self.organ_ids, self.protocol
        tasks = [{"name": f"{'base' if t == 0 else f'step{t}'}-{'-'.join(organs)}"[:80],
                  "classes": [ids[o] for o in organs], "organs": list(organs),
                  "labels": [f"{o}: {p.label_source(o)}" for o in organs]}
                 for t, organs in enumerate(self.task_organs)]  # fmt: skip
        notes = [f"layout {p.layout}; data: {p.source}",
                 f"CT window [{p.window[0]:g}, {p.window[1]:g}] HU -> [0, 1]; reoriented to RAS; target spacing "
                 f"{'native' if self.spacing is None else 'x'.join(f'{s:g}' for s in self.spacing) + ' mm'}"
                 + (f" ({p.spacing_source})" if p.spacing_source and self.config.spacing == 'protocol' else ""),
                 f"model {self.config.model}: {self.backbone}",
                 "metrics: Dice and HD95 per organ over whole cases (MONAI DiceMetric, HausdorffDistanceMetric)"]  # fmt: skip
        if p.ct_cases:
            notes.append(f"CT cases only: {p.ct_cases.source}")
        return {"tasks": tasks, "notes": notes}

    # -- loading -------------------------------------------------------------------------------------------------
    def _volume(self, files, ids: list[int]) -> organ_nifti.Volume:
        try:
            vol = organ_nifti.load_case(files, self.protocol, self.organ_ids, spacing=self.spacing,
                                        tolerance=self.config.affine_tolerance,
                                        allow_missing=self.config.allow_missing_masks)  # fmt: skip
        except organ_nifti.BadData as e:
            raise ConfigError(str(e)) from e
        vol.labels = _partial(vol.labels, ids)
        return vol

    def _slices(self, vol: organ_nifti.Volume, case_index: int, ids: list[int]):
        keep = organ_nifti.slices_with(vol.labels, ids, self.config.slice_margin)
        if self.tiny:
            keep = keep[:8]
        x, y = organ_nifti.to_slices(vol.image, vol.labels, self.config.image_size, keep)
        sz, sr, sc = vol.spacing
        rows, cols = vol.image.shape[1:]
        spacing = (sz, sr * rows / self.config.image_size, sc * cols / self.config.image_size)
        return x, y, case_index, spacing

    def tasks(self) -> list[Task]:
        try:
            per_task, test = self.selected_cases()
        except FileNotFoundError as e:
            raise ConfigError(str(e)) from e
        cases = sorted({f.case: f for files in [*per_task, test] for f in files})
        index = {case: i for i, case in enumerate(cases)}
        tasks = []
        for t, organs in enumerate(self.task_organs):
            ids = [self.organ_ids[o] for o in organs]
            splits = []
            for split, files in (("training", per_task[t]), ("test", test)):
                volumes = [(self._volume(f, ids), index[f.case]) for f in files]
                volumes = [(v, i) for v, i in volumes if np.isin(v.labels, ids).any()]
                if not volumes:
                    raise ConfigError(f"task {t}: no {split} case under {self.config.root} shows any of {list(organs)}")
                if self.config.model == "slice2d":
                    splits.append(_stack_slices([self._slices(v, i, ids) for v, i in volumes], t))
                elif split == "training":
                    seed = self.config.split_seed * 1_000_003 + t
                    splits.append(VolumeCrops(volumes, self.roi, self.config.samples_per_volume, seed, t))
                else:
                    splits.append(WholeVolumes(volumes, t))
            tasks.append(self._task(t, *splits))
        return tasks


def _stack_slices(parts, task: int) -> SliceDataset:
    """Slices of several cases in one dataset, with each slice's spacing (z, row, column) in mm for HD95."""
    data = _stack([(x, y, c) for x, y, c, _ in parts], task)
    data.spacing = torch.cat([torch.tensor([sp], dtype=torch.float64).expand(len(y), 3) for _, y, _, sp in parts])
    return data


class VolumeCrops(Dataset):
    """Training windows of ``roi`` cut from whole volumes by MONAI's ``RandCropByPosNegLabel`` (pos=1, neg=1: half
    centred on a labelled voxel, half anywhere, as in MONAI's BTCV tutorial), ``samples`` per volume per epoch.
    Volumes smaller than ``roi`` are padded first (``SpatialPad``, zeros = the bottom of the CT window)."""

    def __init__(self, volumes: list, roi: tuple[int, ...], samples: int, seed: int, task: int) -> None:
        from monai.transforms import RandCropByPosNegLabel, SpatialPad
        from monai.transforms.utils import map_binary_to_indices

        pad = SpatialPad(roi)
        self.items = []
        for vol, case in volumes:
            both = pad(torch.from_numpy(np.stack([vol.image, vol.labels.astype(np.float32)])))
            both = torch.as_tensor(both)
            fg, bg = map_binary_to_indices(both[1:] > 0)
            self.items.append((both, fg, bg, case))
        self.crop = RandCropByPosNegLabel(spatial_size=roi, pos=1, neg=1, num_samples=1)
        self.crop.set_random_state(seed)
        self.samples, self.task = max(1, samples), torch.tensor(task)

    def __len__(self) -> int:
        return len(self.items) * self.samples

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        both, fg, bg, case = self.items[i // self.samples]
        crop = torch.as_tensor(self.crop(both, label=both[1:], fg_indices=fg, bg_indices=bg)[0])
        return {"x": crop[:1].float(), "y": crop[1].round().long(), "case": torch.tensor(case), "task": self.task}


class WholeVolumes(Dataset):
    """Test cases as whole volumes (one per batch: sizes differ), with their spacing for HD95 in mm."""

    eval_batch_size = 1

    def __init__(self, volumes: list, task: int) -> None:
        self.items = volumes
        self.task = torch.tensor(task)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        vol, case = self.items[i]
        return {"x": torch.from_numpy(vol.image)[None].float(), "y": torch.from_numpy(vol.labels),
                "case": torch.tensor(case), "task": self.task, "spacing": torch.tensor(vol.spacing, dtype=torch.float64)}
