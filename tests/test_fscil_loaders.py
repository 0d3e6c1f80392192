"""FSCIL loaders on small fake folders: CIFAR-100 through torchvision, miniImageNet and CUB-200 with the bundled
CEC index files. The fakes hold a few images per class, laid out exactly as the real downloads are."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cl_suite.config import ConfigError
from scenarios import fscil_index
from scenarios.fscil import CifarConfig, CubConfig, FSCILCifar100, FSCILCub200, FSCILMiniImageNet, MiniImageNetConfig


def labels_of(dataset) -> list[int]:
    return [int(dataset[i]["y"]) for i in range(len(dataset))]


def tiny_image(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 255, (6, 6, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, format="PNG")  # PNG bytes under a .jpg name: PIL reads by content


def test_cifar100_through_torchvision(tmp_path, monkeypatch):
    import torchvision.datasets.cifar as tv_cifar

    # Fake pickles fail torchvision's md5 check; everything else is torchvision's real reading code.
    monkeypatch.setattr(tv_cifar, "check_integrity", lambda path, md5=None: Path(path).is_file())
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    rng = np.random.default_rng(0)
    train_y, test_y = np.repeat(np.arange(100), 6), np.repeat(np.arange(100), 2)
    for name, y in (("train", train_y), ("test", test_y)):
        data = rng.integers(0, 255, (len(y), 3072), dtype=np.uint8)
        (folder / name).write_bytes(pickle.dumps({"data": data, "fine_labels": y.tolist()}))
    (folder / "meta").write_bytes(pickle.dumps({"fine_label_names": [f"class{i}" for i in range(100)]}))
    protocol = fscil_index.PROTOCOLS["cifar100"]
    lists = [[int(i) for c in classes for i in np.flatnonzero(train_y == c)[:5]]
             for classes in protocol.session_classes()[1:]]  # fmt: skip
    fscil_index.write_sessions(tmp_path / "index", lists, first=1)

    tasks = FSCILCifar100(CifarConfig(root=str(tmp_path), index_dir=str(tmp_path / "index"))).tasks()
    assert len(tasks) == 9 and len(tasks[0].train) == 60 * 6 and len(tasks[0].test) == 60 * 2
    assert sorted(labels_of(tasks[3].train)) == sorted(list(range(70, 75)) * 5)
    assert set(labels_of(tasks[3].test)) == set(range(70, 75)) and tasks[3].meta["class_names"][0] == "class70"
    assert tasks[0].train[0]["x"].shape == (3, 32, 32)
    assert len(FSCILCifar100(CifarConfig(root=str(tmp_path), index_dir=str(tmp_path / "index")), tiny=True).tasks()) == 2
    with pytest.raises(FileNotFoundError, match="cifar-100-python"):
        FSCILCifar100(CifarConfig(root=str(tmp_path / "nowhere"))).tasks()


def test_a_missing_root_is_one_clear_error():
    with pytest.raises(ConfigError, match=r"scenario\.root"):
        FSCILCub200().tasks()


def test_mini_imagenet_with_the_bundled_lists(tmp_path):
    folder = fscil_index.index_dir("mini_imagenet")
    novel = {}  # wnid -> listed file names, in session order
    for s in range(1, 9):
        for line in fscil_index.read_session(folder, s):
            wnid, name = line.split("/")[-2:]
            novel.setdefault(wnid, []).append(name)
    assert len(novel) == 40
    base = {f"n9{c:07d}": [f"n9{c:07d}{k:08d}.jpg" for k in range(2)] for c in range(60)}
    root = tmp_path / "miniimagenet"
    train_rows = [(name, wnid) for wnid, names in {**base, **novel}.items() for name in names]
    test_rows = [(f"{wnid}_test.jpg", wnid) for wnid in {**base, **novel}]
    for split, rows in (("train", train_rows), ("test", test_rows)):
        (root / "split").mkdir(parents=True, exist_ok=True)
        (root / "split" / f"{split}.csv").write_text("filename,label\n" + "".join(f"{n},{w}\n" for n, w in rows))
        for i, (name, _) in enumerate(rows):
            tiny_image(root / "images" / name, i)

    tasks = FSCILMiniImageNet(MiniImageNetConfig(root=str(tmp_path), image_size=24, patch=12)).tasks()
    assert len(tasks) == 9 and len(tasks[0].train) == 120 and len(tasks[1].train) == 25
    assert sorted(labels_of(tasks[1].train)) == sorted(list(range(60, 65)) * 5)
    assert labels_of(tasks[8].test) == list(range(95, 100))
    assert tasks[1].train[0]["x"].shape == (3, 24, 24)
    assert tasks[1].meta["class_names"][0] == next(iter(novel))


def test_cub200_with_the_bundled_lists(tmp_path):
    folder = fscil_index.index_dir("cub200")
    listed = [line for s in range(1, 11) for line in fscil_index.read_session(folder, s)]
    base = [f"{c + 1:03d}.Bird_{c}/Bird_{c}_0001.jpg" for c in range(100)]
    train = base + [line.split("images/", 1)[1] for line in listed]
    test = [f"{c + 1:03d}.Bird_{c}/Bird_{c}_test.jpg" for c in range(200)]
    cub = tmp_path / "CUB_200_2011"
    cub.mkdir()
    images = train + test
    (cub / "images.txt").write_text("".join(f"{i + 1} {p}\n" for i, p in enumerate(images)))
    (cub / "train_test_split.txt").write_text("".join(f"{i + 1} {int(i < len(train))}\n" for i in range(len(images))))
    (cub / "image_class_labels.txt").write_text("".join(f"{i + 1} {int(p[:3])}\n" for i, p in enumerate(images)))
    for i, p in enumerate(images):
        tiny_image(cub / "images" / p, i)

    tasks = FSCILCub200(CubConfig(root=str(tmp_path), image_size=32, patch=16, dim=32)).tasks()
    assert len(tasks) == 11 and len(tasks[0].train) == 100 and len(tasks[10].train) == 50
    assert sorted(labels_of(tasks[10].train)) == sorted(list(range(190, 200)) * 5)
    assert labels_of(tasks[0].test) == list(range(100))
    assert tasks[10].train[0]["x"].shape == (3, 32, 32)
    split = "".join(f"{i + 1} {int(i < 100)}\n" for i in range(len(images)))  # listed images moved to test
    (cub / "train_test_split.txt").write_text(split)
    with pytest.raises(FileNotFoundError, match="50 listed images are not in the training split"):
        FSCILCub200(CubConfig(root=str(tmp_path))).tasks()
