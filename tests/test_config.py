"""Typed run config: layering of defaults, coercion, and errors that name the valid keys or the type."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import pytest

from cl_suite import config
from cl_suite.config import ConfigError, coerce, resolve


def test_defaults_layer_scenario_then_user():
    cfg = resolve({"scenario": "digits-tiny", "strategy": "lora"})
    assert cfg.train.epochs == 5 and cfg.train.lr == 3e-3  # digits-tiny's train_defaults over TrainConfig's
    cfg = resolve({"scenario": {"name": "digits-tiny"}, "strategy": "finetune", "train": {"lr": 0.1}},
                  {"train.epochs": "2", "seed": "7", "scenario.classes_per_task": "5"})  # fmt: skip
    assert (cfg.train.lr, cfg.train.epochs, cfg.seed, cfg.scenario_config.classes_per_task) == (0.1, 2, 7, 5)


def test_bad_type_names_field_and_type():
    with pytest.raises(ConfigError, match=r"train\.lr: expected float, got 'abc'"):
        resolve({"scenario": "digits-tiny", "strategy": "finetune"}, {"train.lr": "abc"})


def test_unknown_keys_list_valid_keys():
    with pytest.raises(ConfigError, match=r"unknown config key 'train\.lrr'.*train\.lr"):
        resolve({"scenario": "digits-tiny", "strategy": "finetune"}, {"train.lrr": "1"})
    with pytest.raises(ConfigError, match=r"'scenario\.nope'.*scenario\.class_order"):
        resolve({"scenario": "digits-tiny", "strategy": "finetune"}, {"scenario.nope": "1"})
    with pytest.raises(ConfigError, match="valid top-level keys"):
        resolve({"scenario": "digits-tiny", "strategy": "finetune", "epochs": 3})


def test_missing_names_say_how_to_give_them():
    with pytest.raises(ConfigError, match="--scenario"):
        resolve({"strategy": "finetune"})


def test_round_trip_through_yaml_keeps_config_and_hash(tmp_path):
    cfg = resolve({"scenario": "digits-tiny", "strategy": "joint"},
                  {"scenario.class_order": "9,8,7,6,5,4,3,2,1,0", "train.precision": "bf16"})  # fmt: skip
    assert cfg.scenario_config.class_order == (9, 8, 7, 6, 5, 4, 3, 2, 1, 0)
    path = tmp_path / "config.yaml"
    path.write_text(cfg.to_yaml())
    again = resolve(config.load_yaml(path))
    assert again == cfg and again.config_hash() == cfg.config_hash()
    assert resolve(config.load_yaml(path), {"seed": "1"}).config_hash() != cfg.config_hash()


def test_coerce_types():
    assert coerce("true", bool, "k") is True and coerce("0", bool, "k") is False
    assert coerce("3", int, "k") == 3 and coerce(2, float, "k") == 2.0
    assert coerce("none", int | None, "k") is None and coerce("4", int | None, "k") == 4
    assert coerce("[[1, 2], [3]]", tuple[tuple[int, ...], ...], "k") == ((1, 2), (3,))
    assert coerce("cosine", Literal["constant", "cosine"], "k") == "cosine"
    with pytest.raises(ConfigError, match="expected one of 'constant', 'cosine'"):
        coerce("linear", Literal["constant", "cosine"], "train.scheduler")
    with pytest.raises(ConfigError, match="expected int"):
        coerce("1.5", int, "k")
    with pytest.raises(ConfigError, match="expected bool"):
        coerce("maybe", bool, "k")


def test_build_dataclass_rejects_unknown_fields():
    @dataclass
    class Knobs:
        rank: int = 4

    assert config.build_dataclass(Knobs, {"rank": "8"}, "strategy").rank == 8
    with pytest.raises(ConfigError, match=r"valid keys: strategy\.rank"):
        config.build_dataclass(Knobs, {"rnak": 8}, "strategy")


def test_overrides_must_be_key_value():
    assert config.parse_overrides(["train.lr=1e-3", "seed = 2"]) == {"train.lr": "1e-3", "seed": "2"}
    with pytest.raises(ConfigError, match="key=value"):
        config.parse_overrides(["train.lr"])


def test_config_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        config.load_yaml(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a list\n")
    with pytest.raises(ConfigError, match="mapping"):
        config.load_yaml(bad)


def test_top_level_backbone_is_the_scenarios_backbone_field():
    with pytest.raises(ConfigError, match=r"unknown config key 'scenario\.backbone'"):
        resolve({"scenario": "organ-tiny", "strategy": "finetune"}, {"backbone": "x"})  # a scenario without the field
    assert resolve({"scenario": "digits-tiny", "strategy": "finetune"}, {"backbone": "scratch"}).scenario_config.backbone == "scratch"
