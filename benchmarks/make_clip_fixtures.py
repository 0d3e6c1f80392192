"""Build small fixture folders in the layouts the full-scale CLIP protocols read (mtil, xtail, clip-cifar100,
imagenet-r), so each protocol runs end to end without the real datasets:

    python benchmarks/make_clip_fixtures.py DIR [--protocol mtil|xtail|clip-cifar100|imagenet-r|all]
    cl-suite run --scenario mtil --strategy finetune --tiny --set backbone=tiny-clip --set scenario.root=DIR/mtil

Images are random 8x8 pictures; class names are placeholders where the real ones come from the dataset files.
Layouts (scenarios/clip_layouts.py): MTIL as ZSCL's one data location of torchvision files (Aircraft, Caltech101,
DTD, EuroSAT, Food-101, MNIST, Oxford Pets, SUN397) plus index folders with classnames.txt (Stanford Cars, CIFAR-100)
or with ZSCL's list (Flowers); CoOp split files and MNIST for X-TAIL; index folders for CIFAR-100; PILOT's
train/test wnid folders for ImageNet-R.
"""

from __future__ import annotations

import argparse
import json
import struct
from pathlib import Path

import numpy as np

PROTOCOLS = ("mtil", "xtail", "clip-cifar100", "imagenet-r")
EUROSAT = ("AnnualCrop", "Forest", "HerbaceousVegetation", "Highway", "Industrial", "Pasture", "PermanentCrop",
           "Residential", "River", "SeaLake")  # fmt: skip


def _image(path: Path, rng: np.random.Generator) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(path)


def _images(folder: Path, n: int, rng, pattern: str = "{}.jpg") -> list[Path]:
    paths = [folder / pattern.format(i + pattern.startswith("image_")) for i in range(n)]
    for p in paths:
        _image(p, rng)
    return paths


def index_folders(folder: Path, n_classes: int, per_class: int, rng, names: list[str] | None = None) -> None:
    """``folder/{train,test}/<k>/*`` (+ classnames.txt when the names come from the dataset files)."""
    for split in ("train", "test"):
        for k in range(n_classes):
            _images(folder / split / str(k), per_class, rng)
    if names is not None:
        (folder / "classnames.txt").write_text("\n".join(names) + "\n", encoding="utf-8")


def mnist_files(root: Path, per_class: int, rng) -> None:
    """torchvision MNIST's raw idx files under ``root/MNIST/raw``."""
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for prefix in ("train", "t10k"):
        labels = np.repeat(np.arange(10, dtype=np.uint8), per_class)
        images = rng.integers(0, 255, (len(labels), 28, 28), dtype=np.uint8)
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(struct.pack(">IIII", 2051, len(labels), 28, 28) + images.tobytes())
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(struct.pack(">II", 2049, len(labels)) + labels.tobytes())


def caltech101_files(root: Path, rng) -> None:
    """torchvision Caltech101 under ``root``: 101 category folders (+ BACKGROUND_Google, which torchvision drops)."""
    base = root / "caltech101" / "101_ObjectCategories"
    for name in ["BACKGROUND_Google"] + [f"category_{i:03d}" for i in range(101)]:
        _images(base / name, 1 if name != "category_000" else 5, rng, "image_{:04d}.jpg")  # torchvision's names (1-based)


def eurosat_files(root: Path, rng) -> None:
    for name in EUROSAT:
        _images(root / "eurosat" / "2750" / name, 2, rng)


def sun397_files(root: Path, rng) -> None:
    """torchvision SUN397: ClassName.txt and images at SUN397/<class path>/ (names may hold a '/')."""
    classes = ["/a/abbey", "/a/apartment_building/outdoor", "/b/bakery/shop"]
    base = root / "SUN397"
    base.mkdir(parents=True, exist_ok=True)
    (base / "ClassName.txt").write_text("\n".join(classes) + "\n")
    for c in classes:
        _images(base / c.lstrip("/"), 3, rng, "sun_{}.jpg")


def aircraft_files(root: Path, rng, classes=("707-320", "F/A-18", "A300B4")) -> None:
    """torchvision FGVCAircraft: data/variants.txt, data/images_variant_<split>.txt, data/images/<id>.jpg."""
    data = root / "fgvc-aircraft-2013b" / "data"
    data.mkdir(parents=True, exist_ok=True)
    (data / "variants.txt").write_text("\n".join(classes) + "\n")
    for split in ("train", "val", "test"):
        lines = []
        for k, c in enumerate(classes):
            for i in range(2):
                stem = f"{split}{k}{i}"
                _image(data / "images" / f"{stem}.jpg", rng)
                lines.append(f"{stem} {c}")
        (data / f"images_variant_{split}.txt").write_text("\n".join(lines) + "\n")


def dtd_files(root: Path, rng, classes=("banded", "blotchy")) -> None:
    """torchvision DTD: dtd/dtd/labels/<split>1.txt ("class/file.jpg" lines) and dtd/dtd/images/."""
    base = root / "dtd" / "dtd"
    (base / "labels").mkdir(parents=True, exist_ok=True)
    for split in ("train", "val", "test"):
        lines = [f"{c}/{c}_{split}{i}.jpg" for c in classes for i in range(2)]
        for line in lines:
            _image(base / "images" / line, rng)
        (base / "labels" / f"{split}1.txt").write_text("\n".join(lines) + "\n")


def food101_files(root: Path, rng, classes=("apple_pie", "ramen")) -> None:
    """torchvision Food101: food-101/meta/<split>.json ({class: ["class/id", ...]}) and food-101/images/."""
    base = root / "food-101"
    (base / "meta").mkdir(parents=True, exist_ok=True)
    for split in ("train", "test"):
        meta = {c: [f"{c}/{split}{i}" for i in range(2)] for c in classes}
        for rels in meta.values():
            for rel in rels:
                _image(base / "images" / f"{rel}.jpg", rng)
        (base / "meta" / f"{split}.json").write_text(json.dumps(meta))


def pet_files(root: Path, rng, classes=("Abyssinian", "american_bulldog")) -> None:
    """torchvision OxfordIIITPet: oxford-iiit-pet/annotations/<split>.txt ("<id> <label> <species> <breed>")."""
    base = root / "oxford-iiit-pet"
    (base / "annotations").mkdir(parents=True, exist_ok=True)
    for split in ("trainval", "test"):
        lines = []
        for k, c in enumerate(classes):
            for i in range(2):
                image_id = f"{c}_{split}{i}"
                _image(base / "images" / f"{image_id}.jpg", rng)
                lines.append(f"{image_id} {k + 1} 1 1")
        (base / "annotations" / f"{split}.txt").write_text("\n".join(lines) + "\n")


def build_mtil(root: Path, rng) -> None:
    """ZSCL's layout: torchvision's files side by side in one data location (``root``), for 8 of the 11 datasets;
    index folders (+ classnames.txt) for Flowers, Stanford Cars and CIFAR-100."""
    from scenarios import clip_protocols

    data = clip_protocols.load("mtil_zscl")["datasets"]
    for write in (caltech101_files, eurosat_files, sun397_files, aircraft_files, dtd_files, food101_files, pet_files):
        write(root, rng)
    mnist_files(root, 2, rng)
    index_folders(root / "stanford_cars", 2, 2, rng, ["AM General Hummer SUV 2000", "Ram C/V Cargo Van Minivan 2012"])
    index_folders(root / "cifar100", 3, 2, rng, ["apple", "aquarium_fish", "baby"])
    index_folders(root / "flowers", len(data["flowers"]["class_names"]), 1, rng)


def build_xtail(root: Path, rng) -> None:
    from scenarios import clip_protocols

    data = clip_protocols.load("xtail_rail")
    for name, spec in data["coop"].items():
        folder = root / spec["dataset_dir"]
        images = folder / spec["image_dir"]
        classes = [f"{name} class {k}" for k in range(3)]
        if "split_files" in spec:  # FGVC-Aircraft: variants.txt + images_variant_{train,test}.txt
            classes = ["707-320", "F/A-18", "A300B4"]
            (folder).mkdir(parents=True, exist_ok=True)
            (folder / spec["split_files"]["classes"]).write_text("\n".join(classes) + "\n")
            for part, n in (("train", 4), ("test", 2)):
                lines = []
                for k, c in enumerate(classes):
                    for i in range(n):
                        stem = f"{part}{k}{i:02d}"
                        _image(images / f"{stem}.jpg", rng)
                        lines.append(f"{stem} {c}")
                (folder / spec["split_files"][part]).write_text("\n".join(lines) + "\n")
            continue
        split = {"train": [], "val": [], "test": []}
        for part, n in (("train", 4), ("test", 2)):
            for k, c in enumerate(classes):
                for i in range(n):
                    rel = f"{c.replace(' ', '_')}/{part}_{i}.jpg"
                    _image(images / rel, rng)
                    split[part].append([rel, k, c])
        (folder / spec["split_file"]).write_text(json.dumps(split))
    mnist_files(root, 3, rng)  # RAIL reads MNIST from ZSCL's data location


def build_cifar100(root: Path, rng) -> None:
    index_folders(root / "cifar100", 100, 1, rng, [f"class_{k:03d}" for k in range(100)])


def build_imagenet_r(root: Path, rng) -> None:
    from scenarios import clip_protocols

    for wnid in clip_protocols.load("imagenet_r")["wnids"]:
        for split in ("train", "test"):
            _images(root / "imagenet-r" / split / wnid, 1, rng)


BUILDERS = {"mtil": build_mtil, "xtail": build_xtail, "clip-cifar100": build_cifar100, "imagenet-r": build_imagenet_r}


def build(protocol: str, root: str | Path, seed: int = 0) -> Path:
    """Write the fixture of ``protocol`` under ``root`` (its ``scenario.root``) and return it."""
    root = Path(root)
    BUILDERS[protocol](root, np.random.default_rng(seed))
    return root


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", help="folder to write; each protocol goes to OUT/<protocol>")
    parser.add_argument("--protocol", choices=(*PROTOCOLS, "all"), default="all")
    args = parser.parse_args(argv)
    for protocol in PROTOCOLS if args.protocol == "all" else (args.protocol,):
        path = build(protocol, Path(args.out) / protocol)
        print(f"{protocol}: {path}  (--set scenario.root={path})")


if __name__ == "__main__":
    main()
