"""Full-scale CLIP protocols on data the user has on disk: mtil, xtail, clip-cifar100, imagenet-r.

Every fact of a protocol (class names, templates, orders, splits, shots, recipe) is read from the shipped protocol
files in scenarios/clip_protocols/ (each headed by the official repository, path and commit); the layouts they read
are in scenarios/clip_layouts.py. ``cl-suite describe <scenario>`` prints a protocol without any data on disk.

- ``mtil`` (ZSCL, Zheng et al. 2023): 11 datasets, order I or II, task-incremental (``til``); ZSCL's class names,
  templates (training prompts use the first, evaluation ensembles all), splits and per-dataset learning rates.
- ``xtail`` (RAIL, Xu et al. 2024): 10 datasets in RAIL's order, 16 shots per class drawn as RAIL's code draws them,
  CoOp's split_zhou files, one template 'a photo of a {}.', prediction over the union of all class names (``dil``).
- ``clip-cifar100``: ZSCL's cil/ CIFAR-100 B0 Inc10 (its class order, 'a bad photo of a {}.', its recipe); ``cil``.
- ``imagenet-r``: 200 classes, PILOT's seed-1993 class order and B0 Inc20 (10 tasks), PILOT's train/test folders;
  names from the shipped wnid->name map; ZSCL's ImageNet templates; ``cil``.

The image size follows the backbone (``image_size=0``); default backbone ``open_clip:ViT-B-16@openai``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from torch.utils.data import Dataset, Subset

from cl_suite.api import MissingData, Task
from cl_suite.config import ConfigError
from scenarios import clip_layouts as L
from scenarios import clip_protocols
from scenarios.clip_tasks import TINY_EXAMPLES, TINY_TASKS, ClipScenario, Domain

MTIL = "mtil_zscl"
XTAIL = "xtail_rail"
CIL_CIFAR = "cifar100_zscl_cil"
INR = "imagenet_r"


class DictItems(Dataset):
    """(image, label) datasets as ``{"x", "y"}`` items."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> dict:
        x, y = self.dataset[i]
        return {"x": x, "y": int(y)}


def backbone_image_size(backbone: str) -> int:
    """The input size of a backbone, read from its config (no weights loaded)."""
    if backbone == "tiny-clip" or backbone.startswith("tiny-clip@"):
        from cl_suite.models.tiny_clip import IMAGE_SIZE

        return IMAGE_SIZE
    import open_clip

    cfg = open_clip.get_model_config(backbone.removeprefix("open_clip:").partition("@")[0])
    size = (cfg or {}).get("vision_cfg", {}).get("image_size", 224)
    return size[0] if isinstance(size, (tuple, list)) else int(size)


def few_shot(labels: np.ndarray, shots: int, seed: int) -> np.ndarray:
    """``shots`` indices per class, drawn with ``seed`` (all of a class when it has fewer); for --tiny subsets."""
    rng = np.random.default_rng(seed)
    picks = [rng.permutation(np.flatnonzero(labels == c))[:shots] for c in np.unique(labels)]
    return np.sort(np.concatenate(picks))


def _limit(dataset: Dataset, tiny: bool, seed: int) -> Dataset:
    if not tiny or len(dataset) <= TINY_EXAMPLES:
        return dataset
    labels = L.labels_of(dataset)
    idx = few_shot(labels, max(1, TINY_EXAMPLES // len(np.unique(labels))), seed)[:TINY_EXAMPLES]
    sub = Subset(dataset, idx.tolist())
    sub.targets = labels[idx]
    return sub


class _Protocol:
    """Shared pieces of the four scenarios: transforms at the backbone's size; CLIP's logit scale kept fixed, as
    ZSCL trains "all but logit_scale" (mtil/src/models/finetune.py, cil/continual_clip/models.py)."""

    config: Any

    def _transforms(self):
        size = self.config.image_size or backbone_image_size(self.config.backbone)
        return L.transform(size, train=self.config.train_augment), L.transform(size)

    def _clip_model(self, ctx):
        return ClipScenario.build_model(self, ctx)

    def build_model(self, ctx):
        model = self._clip_model(ctx)
        if not self.config.train_logit_scale:
            model.clip.logit_scale.requires_grad_(False)
        return model


@dataclass
class ClipProtocolConfig:
    """Settings that mean the same in all four protocols, declared once; each protocol config adds its own and
    label_smoothing, whose default (ZSCL's 0.2, RAIL's 0.0) differs by protocol."""

    root: str = "data"
    backbone: str = "open_clip:ViT-B-16@openai"
    image_size: int = 0  # 0: the backbone's
    train_augment: bool = True  # RandomResizedCrop(scale=(0.9, 1)) on training images (ZSCL's train transform)
    train_logit_scale: bool = False  # ZSCL excludes CLIP's logit_scale from the optimizer
    text_loss: float = 0.0  # text->image term weight (1.0 under rank-selective-lora and mora)
    # official (CoDyRA/MoRAM train_model) | present-mean (see CLIPTaskModel)
    text_loss_form: Literal["official", "present-mean"] = "official"


# -- MTIL ------------------------------------------------------------------------------------------------------
@dataclass
class MtilConfig(ClipProtocolConfig):
    order: Literal["I", "II"] = "I"
    domains: tuple[str, ...] = ()  # an explicit task order; overrides ``order`` when set
    per_dataset_lr: bool = True  # ZSCL's lr per dataset (5e-5 for Aircraft and MNIST), as a factor on train.lr=1e-5
    label_smoothing: float = 0.2  # ZSCL's --ls 0.2


def _mtil_names_rule(spec: dict) -> list[str] | str:
    return spec["class_names"] if "class_names" in spec else spec["class_names_from"]


class Mtil(_Protocol, ClipScenario):
    """MTIL (ZSCL): 11 datasets in order I or II, task-incremental, CLIP ViT-B/16; Transfer / Avg. / Last."""

    setting = "til"
    Config = MtilConfig
    # ZSCL mtil/scripts/ZSCL.sh + src/args.py: 1000 iterations, batch 64, AdamW (wd 0), 100 warm-up steps, cosine
    # (src/utils.py cosine_lr); lr 1e-5 with 5e-5 for Aircraft and MNIST (per-task factor, see per_dataset_lr)
    train_defaults = {"max_steps": 1000, "batch_size": 64, "optimizer": "adamw", "lr": 1e-5, "weight_decay": 0.0,
                      "scheduler": "cosine", "warmup_steps": 100}  # fmt: skip

    def order(self) -> tuple[str, ...]:
        data = clip_protocols.load(MTIL)
        names = tuple(self.config.domains) or tuple(data["order_II" if self.config.order == "II" else "order_I"])
        unknown = [n for n in names if n not in data["datasets"]]
        if unknown:
            raise ConfigError(f"unknown MTIL datasets {unknown}; accepted: {', '.join(data['datasets'])}")
        return names[:TINY_TASKS] if self.tiny else names

    def _lr_scale(self, spec: dict, base: float = 1e-5) -> float:
        return spec["lr"] / base if self.config.per_dataset_lr else 1.0

    def check_data(self) -> None:
        data = clip_protocols.load(MTIL)["datasets"]
        for name in self.order():
            folder, spec = Path(self.config.root) / name, data[name]
            if L.has_folders(folder):
                L.folder_names(name, folder, spec.get("class_names"))
            else:
                L.check_torchvision(name, spec["torchvision"], (Path(self.config.root), folder))

    def domains(self) -> list[Domain]:
        self.check_data()
        data, transforms, out = clip_protocols.load(MTIL)["datasets"], self._transforms(), []
        for name in self.order():
            folder, spec = Path(self.config.root) / name, data[name]
            if L.has_folders(folder):
                names = L.folder_names(name, folder, spec.get("class_names"))
                if "class_names" not in spec:
                    names = [n.replace("_", " ") for n in names]  # ZSCL's process_labels
                train, test = L.read_folders(name, folder, names, transforms)
            else:
                roots = (Path(self.config.root), folder)  # ZSCL's one data location, or a folder per dataset
                train, test, tv_names = L.read_torchvision(name, spec["torchvision"], roots, spec["train_kwargs"],
                                                           spec["test_kwargs"], transforms)  # fmt: skip
                names = spec.get("class_names") or [n.replace("_", " ") for n in tv_names]
                if tv_names and len(tv_names) != len(names):
                    raise MissingData(f"dataset {name!r}: {folder} holds {len(tv_names)} classes; expected "
                                      f"{len(names)} (torchvision.datasets.{spec['torchvision']} files of the full set)")
            train, test = _limit(train, self.tiny, 0), _limit(test, self.tiny, 0)
            meta = {"split": spec["split"], "lr_scale": self._lr_scale(spec)}
            out.append(Domain(name, tuple(names), tuple(spec["templates"]), DictItems(train), DictItems(test), meta))
        return out

    def describe(self) -> dict[str, Any]:
        data = clip_protocols.load(MTIL)
        tasks = [{"name": n, "class_names": _mtil_names_rule(data["datasets"][n]),
                  "templates": data["datasets"][n]["templates"], "train_template": data["datasets"][n]["train_template"],
                  "split": data["datasets"][n]["split"], "shots": "all",
                  "lr": data["datasets"][n]["lr"] if self.config.per_dataset_lr else "train.lr"}
                 for n in self.order()]  # fmt: skip
        return {"tasks": tasks, "sources": clip_protocols.sources(MTIL), "notes": [
            f"recipe (ZSCL): {data['recipe']}",
            "layouts: torchvision files under ROOT/<dataset> (download=False), or ROOT/<dataset>/{train,test}/<class "
            "index>/* (+ classnames.txt where the names come from torchvision)",
        ]}  # fmt: skip


# -- X-TAIL ----------------------------------------------------------------------------------------------------
@dataclass
class XtailConfig(ClipProtocolConfig):
    domains: tuple[str, ...] = ()  # an explicit task order; RAIL's configs/analytic_clip.yaml order when empty
    shots: int = 16  # RAIL's num_shots
    shot_seed: int = 42  # RAIL's seed (Python random for CoOp domains, numpy for MNIST)
    label_smoothing: float = 0.0


class Xtail(_Protocol, ClipScenario):
    """X-TAIL (RAIL): 10 datasets, 16-shot, predicted over the union of all class names without a domain id; dil."""

    setting = "dil"
    Config = XtailConfig
    # RAIL trains an analytic (ridge-regression) head, not by SGD: there is no SGD recipe to transcribe; these are
    # MTIL's (ZSCL) settings for gradient strategies, scaled to 16-shot sets (see README, X-TAIL conformance).
    train_defaults = {"max_steps": 1000, "batch_size": 64, "optimizer": "adamw", "lr": 1e-5, "weight_decay": 0.0,
                      "scheduler": "cosine", "warmup_steps": 100}  # fmt: skip

    def order(self) -> tuple[str, ...]:
        data = clip_protocols.load(XTAIL)
        names = tuple(self.config.domains) or tuple(data["order"])
        unknown = [n for n in names if n not in data["coop"] and n != "mnist"]
        if unknown:
            raise ConfigError(f"unknown X-TAIL datasets {unknown}; accepted: {', '.join(data['order'])}")
        return names[:TINY_TASKS] if self.tiny else names

    def _folder(self, name: str) -> Path:
        """RAIL's folder name; CoOp's where only that exists (Caltech101: RAIL 'caltech101', CoOp 'caltech-101')."""
        spec = clip_protocols.load(XTAIL)["coop"].get(name, {})
        folder = Path(self.config.root) / spec.get("dataset_dir", name)
        alias = Path(self.config.root) / spec.get("coop_dataset_dir", spec.get("dataset_dir", name))
        return alias if not folder.exists() and alias.exists() else folder

    def check_data(self) -> None:
        data = clip_protocols.load(XTAIL)
        for name in self.order():
            if name == "mnist":
                L.check_torchvision(name, data["mnist"]["torchvision"], (Path(self.config.root), self._folder(name)))
            else:
                L.check_coop(name, self._folder(name), data["coop"][name])

    def domains(self) -> list[Domain]:
        self.check_data()
        data, (train_tf, test_tf) = clip_protocols.load(XTAIL), self._transforms()
        order, read, mnist = self.order(), {}, None
        for name in order:
            if name == "mnist":
                roots = (Path(self.config.root), self._folder(name))  # RAIL reads MNIST from ZSCL's data location
                mnist = L.read_torchvision(name, "MNIST", roots, {"train": True}, {"train": False}, (train_tf, test_tf))
            else:
                read[name] = L.read_coop(name, self._folder(name), data["coop"][name])
        picks = L.rail_few_shot(order, {n: [y for _, y, _ in tr] for n, (tr, _) in read.items()},
                                self.config.shots, self.config.shot_seed)  # fmt: skip
        out = []
        for name in order:
            if name == "mnist":
                train, test, tv_names = mnist
                names = [data["mnist"]["class_name_format"].format(n).replace("_", " ") for n in tv_names]
                chosen = L.numpy_few_shot(train.targets, self.config.shots, self.config.shot_seed)
                train = L.Picked(train.dataset, [train.indices[i] for i in chosen], L.labels_of(train.dataset),
                                 train.transform)  # fmt: skip
            else:
                spec, (train_items, test_items) = data["coop"][name], read[name]
                chosen = [train_items[i] for i in picks[name]]
                names = L.coop_class_names(chosen, spec.get("class_name_suffix", ""))
                train = L.ImageList([(p, y) for p, y, _ in chosen], train_tf)
                test = L.ImageList([(p, y) for p, y, _ in test_items], test_tf)
            train, test = _limit(train, self.tiny, 0), _limit(test, self.tiny, 0)
            meta = {"split": "train / test of the split file", "shots": self.config.shots}
            out.append(Domain(name, tuple(names), tuple(data["templates"]), DictItems(train), DictItems(test), meta))
        return out

    def describe(self) -> dict[str, Any]:
        data = clip_protocols.load(XTAIL)
        tasks = []
        for name in self.order():
            if name == "mnist":
                rule = ("torchvision.datasets.MNIST(...).classes, each as 'number: \"<class>\"' "
                        "(RAIL scenario_datasets/collections.py)")  # fmt: skip
                split = "torchvision MNIST train / test; shots: numpy.random.choice per class (seed shot_seed)"
            else:
                spec = data["coop"][name]
                rule = (f"the classname field of {spec.get('split_file') or spec['split_files']['classes']} (CoOp), "
                        f"by label" + (f", + {spec['class_name_suffix']!r}" if "class_name_suffix" in spec else ""))  # fmt: skip
                split = (f"train / test of {spec.get('split_file') or 'images_variant_{train,test}.txt'}; shots: "
                         "CoOp generate_fewshot_dataset in RAIL's Python random stream (seed shot_seed)")  # fmt: skip
            tasks.append({"name": name, "class_names": rule, "templates": list(data["templates"]),
                          "train_template": data["templates"][0], "split": split, "shots": self.config.shots})  # fmt: skip
        return {"tasks": tasks, "sources": clip_protocols.sources(XTAIL), "notes": [
            "prediction over the union of every domain's class names, no domain id (dil)",
            "layouts: CoOp's ROOT/<dataset_dir>/split_zhou_*.json + images; MNIST as torchvision files in ROOT/mnist",
        ]}  # fmt: skip


# -- class-incremental -----------------------------------------------------------------------------------------
class _ClassIncremental(_Protocol, ClipScenario):
    """One dataset split into tasks by an explicit class order; predicts over the classes seen so far."""

    setting = "cil"
    eval_classes = "seen"
    loss_classes = "task"  # ZSCL cil/continual_clip/models.py: texts of the current task's classes only
    summary = ("last_weighted", "avg_inc_weighted", "last", "forgetting", "bwt")
    dataset_name = ""

    def class_order(self) -> list[int]:
        raise NotImplementedError

    def load(self) -> tuple[Dataset, Dataset, list[str]]:
        raise NotImplementedError

    def templates(self) -> list[str]:
        raise NotImplementedError

    def tasks(self) -> list[Task]:
        if self._tasks is not None:
            return self._tasks
        c = self.config
        train, test, names = self.load()
        ytr, yte = L.labels_of(train), L.labels_of(test)
        order = self.class_order()
        if sorted(order) != list(range(len(names))):
            raise ValueError(f"class order must be a permutation of 0..{len(names) - 1}")
        if len(names) % c.n_tasks:
            raise ValueError(f"n_tasks must divide the {len(names)} classes, got {c.n_tasks}")
        per = len(names) // c.n_tasks
        self._tasks = []
        for t in range(TINY_TASKS if self.tiny else c.n_tasks):
            classes = tuple(order[t * per : (t + 1) * per])
            splits = []
            for ds, y in ((train, ytr), (test, yte)):
                idx = np.flatnonzero(np.isin(y, classes))
                if self.tiny:
                    idx = idx[few_shot(y[idx], max(1, TINY_EXAMPLES // per), c.seed)][:TINY_EXAMPLES]
                splits.append(DictItems(Subset(ds, idx.tolist())))
            self._tasks.append(Task(t, f"{self.dataset_name}-{t}", splits[0], splits[1], classes,
                                    {"class_names": list(names), "templates": self.templates()}))  # fmt: skip
        return self._tasks

    def _clip_model(self, ctx):
        from cl_suite.models.clip import CLIPTaskModel, load_clip

        tasks = self.tasks()
        names = tasks[0].meta["class_names"]
        clip, tokenizer, _ = load_clip(self.config.backbone)
        return CLIPTaskModel(clip, tokenizer, names, [tuple(tasks[0].meta["templates"])] * len(names),
                             [t.classes for t in tasks], self.backbone, eval_classes=self.eval_classes,
                             loss_classes=self.loss_classes, text_loss=self.config.text_loss,
                             text_loss_form=self.config.text_loss_form,
                             label_smoothing=self.config.label_smoothing)  # fmt: skip

    def _card_tasks(self, names: list[str] | str) -> list[dict]:
        order, per = self.class_order(), len(self.class_order()) // self.config.n_tasks
        n = TINY_TASKS if self.tiny else self.config.n_tasks
        return [{"name": f"{self.dataset_name}-{t}", "classes": order[t * per : (t + 1) * per],
                 "class_names": names if isinstance(names, str) else [names[i] for i in order[t * per : (t + 1) * per]],
                 "templates": self.templates(), "train_template": self.templates()[0], "shots": "all"}
                for t in range(n)]  # fmt: skip


@dataclass
class ClipCifar100Config(ClipProtocolConfig):
    n_tasks: int = 10
    class_order: tuple[int, ...] = ()  # empty: ZSCL's cil/class_orders/cifar100.yaml
    seed: int = 0
    label_smoothing: float = 0.2  # ZSCL cil configs: ls 0.2


class ClipCifar100(_ClassIncremental):
    """CLIP class-incremental CIFAR-100, B0 Inc10 as ZSCL's cil/ code runs it (class order, prompt, recipe); cil."""

    Config = ClipCifar100Config
    dataset_name = "cifar100"
    # ZSCL cil/configs/class/cifar100_10-10-LwF.yaml + cil/continual_clip/models.py: batch 64, lr 7.1e-6, wd 0,
    # 1 epoch (hard-coded EPOCH = 1), AdamW, 30 warm-up iterations, cosine
    train_defaults = {"epochs": 1, "batch_size": 64, "optimizer": "adamw", "lr": 7.1e-6, "weight_decay": 0.0,
                      "scheduler": "cosine", "warmup_steps": 30}  # fmt: skip

    def templates(self) -> list[str]:
        return list(clip_protocols.load(CIL_CIFAR)["templates"])

    def class_order(self) -> list[int]:
        return list(self.config.class_order or clip_protocols.load(CIL_CIFAR)["class_order"])

    def check_data(self) -> None:
        folder = Path(self.config.root) / "cifar100"
        if L.has_folders(folder):
            L.folder_names("cifar100", folder, None)
        else:
            L.check_torchvision("cifar100", "CIFAR100", (folder, Path(self.config.root)))

    def load(self):
        self.check_data()
        folder, transforms = Path(self.config.root) / "cifar100", self._transforms()
        if L.has_folders(folder):
            names = L.folder_names("cifar100", folder, None)
            train, test = L.read_folders("cifar100", folder, names, transforms)
        else:
            train, test, names = L.read_torchvision("cifar100", "CIFAR100", (folder, Path(self.config.root)),
                                                    {"train": True}, {"train": False},
                                                    transforms)  # fmt: skip
        if len(names) != 100:
            raise MissingData(f"dataset 'cifar100': {folder} has {len(names)} classes; expected 100")
        return train, test, names  # unchanged names (underscores kept), as ZSCL cil/continual_clip/datasets.py

    def describe(self) -> dict[str, Any]:
        data = clip_protocols.load(CIL_CIFAR)
        tasks = self._card_tasks(data["class_names_from"])
        for task in tasks:
            task["split"] = "torchvision CIFAR100 train=True / train=False (or the train/ and test/ index folders)"
        return {"tasks": tasks, "sources": clip_protocols.sources(CIL_CIFAR),
                "notes": [f"recipe (ZSCL cil): {data['recipe']}", "training scores the current task's classes; "
                          "evaluation the classes seen so far",
                          "layouts: torchvision CIFAR100 files in ROOT/cifar100, or ROOT/cifar100/{train,test}/"
                          "<class index>/* + classnames.txt"]}  # fmt: skip


@dataclass
class ImagenetRConfig(ClipProtocolConfig):
    n_tasks: Literal[5, 10, 20] = 10  # PILOT exps/*_inr.json: init_cls 20, increment 20
    order_seed: int = 1993  # PILOT: np.random.seed(1993); np.random.permutation(200)
    split_seed: int = 0  # only for the tar layout (no train/test folders): our seeded 80/20 split, not PILOT's
    seed: int = 0
    label_smoothing: float = 0.2


class ImagenetR(_ClassIncremental):
    """CLIP class-incremental ImageNet-R: 200 classes, PILOT's seed-1993 order, B0 Inc20 by default; cil."""

    Config = ImagenetRConfig
    dataset_name = "imagenet-r"
    # PILOT trains a ViT with a head (not CLIP): its recipe does not apply; ZSCL cil's CLIP class-incremental recipe
    # (cil/configs/class/*.yaml, cil/continual_clip/models.py) is used instead, see README.
    train_defaults = {"epochs": 1, "batch_size": 64, "optimizer": "adamw", "lr": 7.1e-6, "weight_decay": 0.0,
                      "scheduler": "cosine", "warmup_steps": 30}  # fmt: skip

    def templates(self) -> list[str]:
        return list(clip_protocols.load(INR)["templates"])

    def class_order(self) -> list[int]:
        data = clip_protocols.load(INR)
        if self.config.order_seed == data["order_seed"]:
            return list(data["class_order_seed_1993"])
        return np.random.RandomState(self.config.order_seed).permutation(len(data["wnids"])).tolist()

    def check_data(self) -> None:
        folder = Path(self.config.root) / "imagenet-r"
        if not folder.is_dir():
            raise L.missing("imagenet-r", folder, f"PILOT's {folder}/train/<wnid>/* and {folder}/test/<wnid>/*, or "
                            f"the official imagenet-r.tar extracted as {folder}/<wnid>/*")  # fmt: skip
        wnids = clip_protocols.load(INR)["wnids"]
        for root in ((folder / "train", folder / "test") if L.has_folders(folder) else (folder,)):
            absent = [w for w in wnids if not (root / w).is_dir()]
            if absent:
                raise L.missing("imagenet-r", root / absent[0], f"one folder per ImageNet-R wnid under {root} "
                                f"({len(absent)} of 200 absent)")  # fmt: skip

    def load(self):
        self.check_data()
        data = clip_protocols.load(INR)
        train, test, _ = L.read_imagenet_r(Path(self.config.root) / "imagenet-r", data["wnids"], self._transforms(),
                                           self.config.split_seed)  # fmt: skip
        return train, test, list(data["class_names"])

    def describe(self) -> dict[str, Any]:
        data = clip_protocols.load(INR)
        tasks = self._card_tasks(list(data["class_names"]))
        for task in tasks:
            task["split"] = ("PILOT's train/ and test/ folders; with only the tar's wnid folders: a seeded 80/20 split "
                             f"per class (split_seed={self.config.split_seed}), not PILOT's")  # fmt: skip
        return {"tasks": tasks, "sources": clip_protocols.sources(INR), "notes": [
            f"class order: np.random.seed({self.config.order_seed}); np.random.permutation(200) (PILOT)",
            "recipe: ZSCL cil's CLIP class-incremental recipe (PILOT's is for a ViT with a linear head)",
        ]}  # fmt: skip
