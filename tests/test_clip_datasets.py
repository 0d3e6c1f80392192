"""Full-scale CLIP loaders (mtil, xtail, clip-cifar100, imagenet-r) on small fake ImageFolder trees made here."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import cl_suite  # noqa: F401  (torchvision fix)
from cl_suite.models import tiny_clip
from scenarios import clip_datasets as cd


def _fake_folder(root, name, classes, n_train, n_test, split=True):
    rng = np.random.default_rng(0)
    for part, n in (("train", n_train), ("test", n_test)) if split else (("", n_train + n_test),):
        for c in classes:
            d = root / name / part / c
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 255, (12, 12, 3), dtype=np.uint8)).save(d / f"{i}.png")


@pytest.fixture(scope="module")
def clip_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("clip") / "tiny_clip.pt"
    tiny_clip.save(tiny_clip.build(seed=3), path)
    return f"tiny-clip@{path}"


def _config(cls, root, backbone, **kw):
    return cls.Config(root=str(root), backbone=backbone, image_size=32, **kw)


def test_mtil_orders_and_offsets(tmp_path, clip_path):
    for name in cd.MTIL_ORDER_I:
        _fake_folder(tmp_path, name, ["a_b", "c"], 2, 1)
    scenario = cd.Mtil(_config(cd.Mtil, tmp_path, clip_path, order="II"))
    tasks = scenario.tasks()
    assert [t.name for t in tasks] == list(cd.MTIL_ORDER_II) and tasks[0].name == "stanford_cars"
    assert tasks[1].classes == (2, 3) and tasks[0].meta["class_names"] == ["a b", "c"]
    item = tasks[1].test[0]
    assert item["x"].shape == (3, 32, 32) and item["y"] in (2, 3)
    model = scenario.build_model(None)
    batch = {"x": torch.stack([tasks[1].test[0]["x"]]), "y": torch.tensor([tasks[1].test[0]["y"]])}
    assert model.predict(batch, 1).argmax(1).item() in (2, 3)
    assert cd.Mtil(_config(cd.Mtil, tmp_path, clip_path), tiny=True).tasks()[0].name == "aircraft"


def test_missing_dataset_names_the_folder(tmp_path, clip_path):
    with pytest.raises(FileNotFoundError, match=r"dataset 'aircraft' not found: put ImageFolder trees at .*aircraft/train"):
        cd.Mtil(_config(cd.Mtil, tmp_path, clip_path)).tasks()


def test_xtail_is_16_shot_union_label_space(tmp_path, clip_path):
    for name in cd.XTAIL_ORDER:
        _fake_folder(tmp_path, name, ["x", "y", "z"], 5, 2)
    scenario = cd.Xtail(_config(cd.Xtail, tmp_path, clip_path, shots=2))
    tasks = scenario.tasks()
    assert scenario.setting == "dil" and len(tasks) == 10 and "cifar100" not in [t.name for t in tasks]
    assert all(len(t.train) == 6 and len(t.test) == 6 for t in tasks)
    model = scenario.build_model(None)
    batch = {"x": torch.stack([tasks[0].test[0]["x"]]), "y": torch.tensor([0])}
    assert torch.isfinite(model.predict(batch, None)).all()  # every domain's classes are scored
    first = cd.few_shot(np.repeat(np.arange(3), 5), 2, seed=42)
    assert np.array_equal(first, cd.few_shot(np.repeat(np.arange(3), 5), 2, seed=42))  # seeded


def test_clip_cifar100_class_order_and_tiny(tmp_path, clip_path):
    _fake_folder(tmp_path, "cifar100", [f"c{i:03d}" for i in range(100)], 1, 1)
    scenario = cd.ClipCifar100(_config(cd.ClipCifar100, tmp_path, clip_path), tiny=True)
    tasks = scenario.tasks()
    assert len(tasks) == 2 and tasks[0].classes == cd.CIFAR100_ORDER[:10] and tasks[1].classes == cd.CIFAR100_ORDER[10:20]
    assert {tasks[0].train[i]["y"] for i in range(len(tasks[0].train))} == set(cd.CIFAR100_ORDER[:10])
    model = scenario.build_model(None)
    model.on_task_start(tasks[0])
    batch = {"x": torch.stack([tasks[0].test[0]["x"]]), "y": torch.tensor([tasks[0].test[0]["y"]])}
    assert model.predict(batch, None).argmax(1).item() in cd.CIFAR100_ORDER[:10]  # only seen classes


def test_imagenet_r_splits_a_single_folder(tmp_path, clip_path):
    _fake_folder(tmp_path, "imagenet-r", [f"n{i:02d}" for i in range(10)], 4, 1, split=False)
    scenario = cd.ImagenetR(_config(cd.ImagenetR, tmp_path, clip_path, n_tasks=5))
    tasks = scenario.tasks()
    assert len(tasks) == 5 and all(len(t.classes) == 2 for t in tasks)
    assert sorted(c for t in tasks for c in t.classes) == list(range(10))
    assert sum(len(t.train) for t in tasks) == 40 and sum(len(t.test) for t in tasks) == 10
    with pytest.raises(FileNotFoundError, match="imagenet-r"):
        cd.ImagenetR(_config(cd.ImagenetR, tmp_path / "none", clip_path)).tasks()
