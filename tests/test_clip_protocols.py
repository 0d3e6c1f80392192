"""Conformance of the shipped CLIP protocol data (scenarios/clip_protocols) with the official code.

Every expected value below was read by hand from the official repositories at these commits:
ZSCL   Thunderbeee/ZSCL @ b96e71423e2cbd592ddd229aaf2f1e889b86f1af
RAIL   linghan1997/Regression-based-Analytic-Incremental-Learning @ eaac644e1acc2d10e2a6863e7ba19cbf422b6461
PILOT  sun-hailong/LAMDA-PILOT @ 264745534fc2233f5a50b020e50a3472c47eb756
IN-R   hendrycks/imagenet-r @ 3131cacee97c407bd2ecea15846a67817a64f924
"""

from __future__ import annotations

import json
import random

import numpy as np

from cl_suite import protocol_card
from scenarios import clip_layouts as L
from scenarios import clip_protocols

ZSCL, RAIL = "b96e71423e2cbd592ddd229aaf2f1e889b86f1af", "eaac644e1acc2d10e2a6863e7ba19cbf422b6461"


def test_files_name_their_sources_with_commits():
    for name, commit in (("mtil_zscl", ZSCL), ("xtail_rail", RAIL), ("cifar100_zscl_cil", ZSCL)):
        assert all(s["commit"] == commit for s in clip_protocols.sources(name) if s["repo"] != "KaiyangZhou/CoOp")
    coop = [s for s in clip_protocols.sources("xtail_rail") if s["repo"] == "KaiyangZhou/CoOp"]
    assert [s["commit"] for s in coop] == ["ff61507c790454bce7c5052c3ac39e60772f1f89"]
    assert {s["repo"] for s in clip_protocols.sources("imagenet_r")} == {
        "hendrycks/imagenet-r", "Thunderbeee/ZSCL", "sun-hailong/LAMDA-PILOT"}  # fmt: skip


def test_mtil_orders_and_learning_rates():
    data = clip_protocols.load("mtil_zscl")
    # ZSCL mtil/scripts/ZSCL.sh: dataset=(Aircraft Caltech101 CIFAR100 DTD EuroSAT Flowers Food MNIST OxfordPet ...)
    assert data["order_I"] == ["aircraft", "caltech101", "cifar100", "dtd", "eurosat", "flowers", "food", "mnist",
                               "oxford_pet", "stanford_cars", "sun397"]  # fmt: skip
    # ZSCL mtil/scripts/ZSCL_minus.sh: dataset=(StanfordCars Food MNIST OxfordPet Flowers SUN397 Aircraft ...)
    assert data["order_II"] == ["stanford_cars", "food", "mnist", "oxford_pet", "flowers", "sun397", "aircraft",
                                "caltech101", "dtd", "eurosat", "cifar100"]  # fmt: skip
    # ZSCL.sh lr=(5e-5 1e-5 ... 5e-5 at MNIST ...): Aircraft and MNIST 5e-5, every other dataset 1e-5
    assert {k for k, v in data["datasets"].items() if v["lr"] == 5e-5} == {"aircraft", "mnist"}
    assert {v["lr"] for k, v in data["datasets"].items() if k not in ("aircraft", "mnist")} == {1e-5}
    # args.py: --batch-size 64, --warmup_length 100, --wd 0; scripts: --iterations 1000 --ls 0.2
    recipe = data["recipe"]
    assert (recipe["iterations"], recipe["batch_size"], recipe["warmup_steps"], recipe["label_smoothing"]) == (1000, 64, 100, 0.2)


def test_mtil_class_names_templates_and_splits():
    d = clip_protocols.load("mtil_zscl")["datasets"]
    # collections.py Caltech101.classnames: 101 names; index 29 has ZSCL's double space
    caltech = d["caltech101"]["class_names"]
    assert (len(caltech), caltech[0], caltech[1], caltech[29], caltech[-1]) == (
        101, "off-center face", "centered face", "head of a  crocodile", "yin and yang symbol")  # fmt: skip
    eurosat = d["eurosat"]["class_names"]
    assert (len(eurosat), eurosat[0], eurosat[2], eurosat[-1]) == (10, "annual crop land", "brushland or shrubland", "lake or sea")
    flowers = d["flowers"]["class_names"]
    assert (len(flowers), flowers[0], flowers[-1]) == (102, "pink primrose", "blackberry lily")
    for name in ("aircraft", "cifar100", "dtd", "food", "mnist", "oxford_pet", "stanford_cars", "sun397"):
        assert "class_names" not in d[name] and "torchvision" in d[name]["class_names_from"]  # names from torchvision
    counts = {k: len(v["templates"]) for k, v in d.items()}
    # collections.py templates lists; CIFAR-100: cifar10.py cifar10_template (18)
    assert counts == {"aircraft": 2, "caltech101": 34, "cifar100": 18, "dtd": 8, "eurosat": 3, "flowers": 1, "food": 1,
                      "mnist": 1, "oxford_pet": 1, "stanford_cars": 9, "sun397": 2}  # fmt: skip
    assert d["stanford_cars"]["templates"][0] == "a photo of a {}, a type of car."
    assert d["stanford_cars"]["templates"][-1] == "a photo of my old {}."
    assert d["caltech101"]["templates"][-1] == "a doodle of the {}."
    assert d["food"]["templates"] == ["a photo of a {}, a type of food."]
    assert d["mnist"]["templates"] == ['a photo of the number: "{}".']
    assert d["cifar100"]["templates"][-1] == "a photo of the big {}."
    # finetune.py trains with dataset.template, i.e. templates[0]
    assert all(v["train_template"] == v["templates"][0] for v in d.values())
    # torchvision splits: FGVCAircraft split="train" (not trainval), OxfordIIITPet "trainval"
    assert d["aircraft"]["train_kwargs"] == {"split": "train"} and d["oxford_pet"]["train_kwargs"] == {"split": "trainval"}
    assert {k for k, v in d.items() if v["train_kwargs"] is None} == {"caltech101", "eurosat", "sun397"}  # 80/20, seed 42


def test_xtail_protocol():
    data = clip_protocols.load("xtail_rail")
    # RAIL configs/analytic_clip.yaml
    assert data["order"] == ["aircraft", "caltech101", "dtd", "eurosat", "oxford_flowers", "food101", "mnist",
                             "oxford_pets", "stanford_cars", "sun397"]  # fmt: skip
    assert (data["num_shots"], data["seed"]) == (16, 42)
    assert data["templates"] == ["a photo of a {}."]  # primal_RAIL.py: template = ['a photo of a {}.']
    assert data["coop"]["eurosat"]["class_name_suffix"] == " satellite location"  # scenario_datasets/eurosat.py
    assert data["coop"]["caltech101"]["split_file"] == "split_zhou_Caltech101.json"
    assert data["coop"]["dtd"]["split_file"] == "split_zhou_DescribableTextures.json"
    assert data["coop"]["aircraft"]["split_files"]["train"] == "images_variant_train.txt"  # fgvc.py
    assert data["coop"]["food101"]["dataset_dir"] == "food-101"


def test_cifar100_cil_protocol():
    data = clip_protocols.load("cifar100_zscl_cil")
    order = data["class_order"]  # ZSCL cil/class_orders/cifar100.yaml
    assert sorted(order) == list(range(100)) and order[:5] == [87, 0, 52, 58, 44] and order[-3:] == [26, 35, 39]
    assert data["templates"] == ["a bad photo of a {}."]  # cil/configs/class/cifar100_10-10-LwF.yaml prompt_template
    assert (data["recipe"]["lr"], data["recipe"]["batch_size"], data["recipe"]["warmup_steps"]) == (7.1e-6, 64, 30)


def test_imagenet_r_protocol():
    data = clip_protocols.load("imagenet_r")
    wnids, names = data["wnids"], data["class_names"]
    assert len(wnids) == 200 == len(set(wnids)) and wnids == sorted(wnids)
    assert (wnids[0], names[0], wnids[-1], names[-1]) == ("n01443537", "goldfish", "n12267677", "acorn")
    # ZSCL mtil/src/datasets/imagenet_r.py CLASS_SUBLIST
    assert data["imagenet_index"][:5] == [1, 2, 4, 6, 8] and data["imagenet_index"][-1] == 988
    assert len(data["templates"]) == 80 and data["templates"][0] == "a bad photo of a {}."  # openai_imagenet_template
    # PILOT utils/data_manager.py: np.random.seed(seed); np.random.permutation(len(order)); exps/*_inr.json seed 1993
    np.random.seed(1993)
    assert data["class_order_seed_1993"] == np.random.permutation(200).tolist()
    assert (data["initial_increment"], data["increment"]) == (20, 20)


def test_rail_few_shot_follows_rails_random_stream():
    """primal_RAIL.py: random.seed(42); every domain built once for its class names, then per task its training
    set, then each learned domain again for evaluation; CoOp's generate_fewshot_dataset draws per label."""
    labels = {"a": [0, 0, 0, 1, 1, 1], "b": [1, 0, 1, 0, 1, 0, 0]}
    picks = L.rail_few_shot(["a", "b"], labels, 2, 42)
    rng = random.Random(42)

    def draw(name):
        by = {}
        for i, y in enumerate(labels[name]):
            by.setdefault(y, []).append(i)
        return [i for items in by.values() for i in rng.sample(items, 2)]

    draw("a"), draw("b")  # class-name pass
    expected_a = draw("a")
    draw("a")  # evaluation after task 1
    expected_b = draw("b")
    assert picks == {"a": expected_a, "b": expected_b}
    assert len(L.rail_few_shot(["a"], {"a": [0, 1]}, 3, 0)["a"]) == 6  # fewer than shots: random.choices, repeats


def test_cards_print_the_shipped_protocols():
    mtil = protocol_card.build("mtil", {"scenario.order": "II"})
    assert [t["name"] for t in mtil["tasks"]][:2] == ["stanford_cars", "food"]
    assert mtil["tasks"][6]["lr"] == 5e-5 and mtil["train"]["warmup_steps"] == 100
    assert json.loads(protocol_card.to_json(mtil)) == mtil
    xtail = protocol_card.build("xtail")
    assert len(xtail["tasks"]) == 10 and all(t["templates"] == ["a photo of a {}."] for t in xtail["tasks"])
    cifar = protocol_card.build("clip-cifar100")
    assert cifar["tasks"][0]["classes"][:3] == [87, 0, 52] and cifar["train"]["lr"] == 7.1e-6
    inr = protocol_card.build("imagenet-r")
    assert len(inr["tasks"]) == 10 and inr["tasks"][0]["class_names"][0] == clip_protocols.load("imagenet_r")["class_names"][168]


def test_readme_tables_agree_with_the_cards():
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    mtil = protocol_card.build("mtil")
    row = next(line for line in readme.splitlines() if line.startswith("| templates | per dataset:"))
    counts = dict(re.findall(r"(\w+) (\d+)", row.split("|")[2]))
    names = {"Aircraft": "aircraft", "Caltech101": "caltech101", "CIFAR100": "cifar100", "DTD": "dtd",
             "EuroSAT": "eurosat", "Flowers": "flowers", "Food": "food", "MNIST": "mnist", "OxfordPet": "oxford_pet",
             "StanfordCars": "stanford_cars", "SUN397": "sun397"}  # fmt: skip
    assert {names[k]: int(v) for k, v in counts.items()} == {t["name"]: len(t["templates"]) for t in mtil["tasks"]}
    xtail = protocol_card.build("xtail")
    assert f"| order | {', '.join(t['name'] for t in xtail['tasks'])} |" in readme
    cifar = protocol_card.build("clip-cifar100")
    assert f"| class order | {', '.join(map(str, cifar['tasks'][0]['classes'][:5]))}, … 26, 35, 39 |" in readme
    inr = protocol_card.build("imagenet-r")
    assert f"({', '.join(map(str, inr['tasks'][0]['classes'][:5]))}, …)" in readme
