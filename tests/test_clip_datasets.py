"""Full-scale CLIP protocols (mtil, xtail, clip-cifar100, imagenet-r) on fixture folders built here with
benchmarks/make_clip_fixtures.py: every layout parsed, names from the protocols' lists, splits as the official code
makes them, the image size of the backbone, and missing data as one line (exit 2) before any run folder."""

from __future__ import annotations

import importlib.util
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

import cl_suite  # noqa: F401  (torchvision fix)
from cl_suite import cli
from cl_suite.api import MissingData
from cl_suite.models import tiny_clip
from scenarios import clip_datasets as cd
from scenarios import clip_protocols

REPO = Path(__file__).resolve().parent.parent


def _fixtures():
    spec = importlib.util.spec_from_file_location("make_clip_fixtures", REPO / "benchmarks" / "make_clip_fixtures.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def roots(tmp_path_factory):
    fx, base = _fixtures(), tmp_path_factory.mktemp("clip_fixtures")
    return {p: fx.build(p, base / p) for p in fx.PROTOCOLS}


def _tasks(scenario_cls, root, tiny=False, **kw):
    return scenario_cls(scenario_cls.Config(root=str(root), backbone="tiny-clip", **kw), tiny=tiny).tasks()


def test_mtil_reads_torchvision_files_and_index_folders(roots):
    tasks = {t.name: t for t in _tasks(cd.Mtil, roots["mtil"])}
    data = clip_protocols.load("mtil_zscl")["datasets"]
    assert list(tasks) == clip_protocols.load("mtil_zscl")["order_I"]
    # torchvision's names ('_' -> ' ' as ZSCL's process_labels), "/" included; index folders: classnames.txt
    assert tasks["aircraft"].meta["class_names"] == ["707-320", "F/A-18", "A300B4"]  # FGVCAircraft variants.txt
    assert len(tasks["aircraft"].train) == 6  # split="train" (ZSCL), not trainval (12)
    assert tasks["dtd"].meta["class_names"] == ["banded", "blotchy"]
    assert tasks["food"].meta["class_names"] == ["apple pie", "ramen"]
    assert tasks["oxford_pet"].meta["class_names"] == ["Abyssinian", "American Bulldog"]
    assert tasks["stanford_cars"].meta["class_names"][1] == "Ram C/V Cargo Van Minivan 2012"
    assert tasks["cifar100"].meta["class_names"][1] == "aquarium fish"
    assert tasks["flowers"].meta["class_names"] == data["flowers"]["class_names"]
    assert tasks["sun397"].meta["class_names"] == ["abbey", "apartment building/outdoor", "bakery/shop"]
    assert tasks["eurosat"].meta["class_names"] == data["eurosat"]["class_names"]  # ZSCL's list, not "AnnualCrop"
    assert tasks["caltech101"].meta["class_names"][0] == "off-center face"
    assert tasks["mnist"].meta["class_names"][0] == "0 - zero"  # torchvision's MNIST classes
    assert tasks["stanford_cars"].meta["templates"] == data["stanford_cars"]["templates"]
    assert tasks["aircraft"].meta["lr_scale"] == 5.0 and tasks["caltech101"].meta["lr_scale"] == 1.0
    # image size follows the backbone (tiny-clip: 32 px)
    assert tasks["aircraft"].train[0]["x"].shape == (3, tiny_clip.IMAGE_SIZE, tiny_clip.IMAGE_SIZE)
    # ZSCL's 80/20 split: torch random_split with Generator().manual_seed(42) over the whole Caltech101 set
    n = len(tasks["caltech101"].train) + len(tasks["caltech101"].test)
    assert len(tasks["caltech101"].train) == int(0.8 * n)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(42)).tolist()
    assert tasks["caltech101"].train.dataset.dataset.indices == perm[: int(0.8 * n)]
    order_ii = _tasks(cd.Mtil, roots["mtil"], tiny=True, order="II")
    assert [t.name for t in order_ii] == ["stanford_cars", "food"]


def test_xtail_reads_coop_split_files(roots):
    tasks = {t.name: t for t in _tasks(cd.Xtail, roots["xtail"], shots=2)}
    assert list(tasks) == clip_protocols.load("xtail_rail")["order"]
    assert tasks["eurosat"].meta["class_names"][0] == "eurosat class 0 satellite location"  # RAIL's suffix
    assert tasks["aircraft"].meta["class_names"] == ["707-320", "F/A-18", "A300B4"]  # variants.txt
    assert tasks["mnist"].meta["class_names"][0] == 'number: "0 - zero"'
    assert all(t.meta["templates"] == ["a photo of a {}."] for t in tasks.values())
    assert len(tasks["dtd"].train) == 3 * 2 and len(tasks["dtd"].test) == 3 * 2  # 2 shots of 3 classes; full test
    assert len(tasks["mnist"].train) == 10 * 2
    root = roots["xtail"]
    scenario = cd.Xtail(cd.Xtail.Config(root=str(root), backbone="tiny-clip", shots=2), tiny=True)
    model = scenario.build_model(None)
    assert not model.clip.logit_scale.requires_grad  # ZSCL/RAIL never train CLIP's logit scale
    batch = {"x": torch.stack([scenario.tasks()[1].test[0]["x"]])}
    assert torch.isfinite(model.predict(batch, None)).all()  # scored over the union of the domains' classes
    (root / "caltech101").rename(root / "caltech-101")  # CoOp's DATASETS.md folder name is read too
    try:
        alias = cd.Xtail(cd.Xtail.Config(root=str(root), backbone="tiny-clip", shots=2), tiny=True).tasks()
        assert alias[1].meta["class_names"] == tasks["caltech101"].meta["class_names"]
    finally:
        (root / "caltech-101").rename(root / "caltech101")


def test_clip_cifar100_torchvision_files_with_checksums_disabled(tmp_path, monkeypatch):
    from torchvision.datasets import cifar

    monkeypatch.setattr(cifar, "check_integrity", lambda *a, **k: True)  # only inside this test
    monkeypatch.setattr(cifar.CIFAR100, "_check_integrity", lambda self: True)
    base = tmp_path / "cifar100" / "cifar-100-python"
    base.mkdir(parents=True)
    names = [f"name_{k:02d}" for k in range(100)]
    rng = np.random.default_rng(0)
    for split, per in (("train", 2), ("test", 1)):
        labels = np.repeat(np.arange(100), per).tolist()
        data = rng.integers(0, 255, (len(labels), 3072), dtype=np.uint8)
        (base / split).write_bytes(pickle.dumps({"data": data, "fine_labels": labels}))
    (base / "meta").write_bytes(pickle.dumps({"fine_label_names": names}))
    tasks = _tasks(cd.ClipCifar100, tmp_path, tiny=True)
    order = clip_protocols.load("cifar100_zscl_cil")["class_order"]
    assert tasks[0].classes == tuple(order[:10]) and tasks[1].classes == tuple(order[10:20])
    assert tasks[0].meta["class_names"][0] == "name_00"  # torchvision's names unchanged (underscores kept)
    assert {int(tasks[0].train[i]["y"]) for i in range(len(tasks[0].train))} == set(order[:10])


def test_imagenet_r_pilot_folders_and_tar_layout(roots, tmp_path):
    data = clip_protocols.load("imagenet_r")
    tasks = _tasks(cd.ImagenetR, roots["imagenet-r"])
    assert len(tasks) == 10 and tasks[0].classes == tuple(data["class_order_seed_1993"][:20])
    assert tasks[0].meta["class_names"][0] == "goldfish"  # the wnid map, not "n01443537"
    assert sum(len(t.train) for t in tasks) == 200 and sum(len(t.test) for t in tasks) == 200
    for wnid in data["wnids"]:  # the official tar: one folder per wnid, 5 images each
        for i in range(5):
            (tmp_path / "imagenet-r" / wnid).mkdir(parents=True, exist_ok=True)
            (tmp_path / "imagenet-r" / wnid / f"{i}.jpg").write_bytes(b"")
    tar = cd.ImagenetR(cd.ImagenetR.Config(root=str(tmp_path), backbone="tiny-clip", n_tasks=5)).tasks()
    assert len(tar) == 5 and sum(len(t.test) for t in tar) == 200 and sum(len(t.train) for t in tar) == 800


def test_missing_data_names_dataset_path_and_layout(roots, tmp_path):
    with pytest.raises(MissingData, match=r"dataset 'aircraft': missing .*fgvc-aircraft-2013b; expected torchvision"):
        cd.Mtil(cd.Mtil.Config(root=str(tmp_path))).check_data()
    (tmp_path / "aircraft" / "train").mkdir(parents=True)
    (tmp_path / "aircraft" / "test").mkdir()
    with pytest.raises(MissingData, match=r"aircraft.*classnames.txt"):
        cd.Mtil(cd.Mtil.Config(root=str(tmp_path))).check_data()
    fx = _fixtures()
    fx.caltech101_files(tmp_path, np.random.default_rng(0))  # ZSCL: one data location
    next((tmp_path / "caltech101" / "101_ObjectCategories").glob("category_05*")).rename(tmp_path / "gone")
    with pytest.raises(MissingData, match=r"dataset 'caltech101': .* holds 100 classes; expected 101"):
        cd.Mtil(cd.Mtil.Config(root=str(tmp_path), domains=("caltech101",), backbone="tiny-clip")).tasks()
    with pytest.raises(MissingData, match=r"split_zhou_Caltech101.json"):
        cd.Xtail(cd.Xtail.Config(root=str(tmp_path), domains=("caltech101",))).check_data()
    with pytest.raises(MissingData, match=r"imagenet-r.*n01443537"):
        (tmp_path / "imagenet-r" / "train").mkdir(parents=True)
        (tmp_path / "imagenet-r" / "test").mkdir()
        cd.ImagenetR(cd.ImagenetR.Config(root=str(tmp_path))).check_data()


@pytest.mark.parametrize("args", [
    ["--scenario", "mtil", "--set", "scenario.root=NOWHERE"],
    ["--scenario", "xtail", "--set", "scenario.root=NOWHERE"],
    ["--scenario", "imagenet-r", "--set", "scenario.root=NOWHERE"],
    ["--scenario", "clip-cifar100", "--set", "scenario.root=NOWHERE"],
    ["--scenario", "xtail", "--set", "scenario.order=II"],  # X-TAIL has one order: a bad key, not ignored
])  # fmt: skip
def test_bad_input_is_one_line_exit_2_before_any_run_folder(args, tmp_path, capsys):
    args = [a.replace("NOWHERE", str(tmp_path / "none")) for a in args]
    code = cli.main(["run", *args, "--strategy", "finetune", "--tiny", "--set", "backbone=tiny-clip",
                     "--results", str(tmp_path / "results")])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert not (tmp_path / "results").exists() or not any((tmp_path / "results").iterdir())


@pytest.mark.parametrize("protocol", [  # mtil (34 templates x 101 Caltech classes) and imagenet-r (80 x 200) take 60-80 s
    pytest.param("mtil", marks=pytest.mark.slow), "xtail", "clip-cifar100", pytest.param("imagenet-r", marks=pytest.mark.slow),
])  # fmt: skip
def test_tiny_runs_with_tiny_clip(protocol, roots, tmp_path, capsys):
    code = cli.main(["run", "--scenario", protocol, "--strategy", "finetune", "--tiny", "--set", "backbone=tiny-clip",
                     "--set", f"scenario.root={roots[protocol]}", "--set", "train.max_steps=2",
                     "--results", str(tmp_path)])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    assert len(list(tmp_path.rglob("run.json"))) == 1


def test_a_tasks_lr_scale_multiplies_the_learning_rate(tmp_path, monkeypatch):
    """The runner's per-task factor (Task.meta["lr_scale"]) that carries ZSCL's per-dataset learning rates."""
    import dataclasses
    import json

    from scenarios.digits import DigitsTiny

    tasks = DigitsTiny.tasks

    def scaled(self):
        return [dataclasses.replace(t, meta={**t.meta, "lr_scale": 5.0}) if t.index == 1 else t for t in tasks(self)]

    monkeypatch.setattr(DigitsTiny, "tasks", scaled)
    assert cli.main(["run", "--scenario", "digits-tiny", "--strategy", "finetune", "--tiny", "--set", "train.max_steps=2",
                     "--set", "train.lr=0.01", "--results", str(tmp_path)]) == 0  # fmt: skip
    rows = [json.loads(line) for line in next(tmp_path.rglob("train.jsonl")).read_text().splitlines()]
    lr = {r["task"]: r["lr"] for r in rows if r.get("step") == 2}
    assert lr[0] == pytest.approx(0.01) and lr[1] == pytest.approx(0.05)
