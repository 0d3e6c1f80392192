"""`cl-suite describe`: protocol cards built from the scenario class and its describe(), without data on disk."""

import json

from cl_suite import cli, protocol_card


def test_card_of_a_generated_scenario_lists_its_tasks_in_order():
    card = protocol_card.build("digits-tiny")
    assert card["setting"] == "cil"
    assert [t["name"] for t in card["tasks"]] == ["digits-0-1", "digits-2-3", "digits-4-5", "digits-6-7", "digits-8-9"]
    assert card["tasks"][1]["classes"] == [2, 3]
    assert card["train"]["epochs"] == 5  # digits-tiny's train_defaults, not TrainConfig's 1
    assert card["full_tune_train"] == {"lr": 3e-4}  # whole-model fine-tuning of the pretrained tower (README)
    assert "tune the whole model (Strategy.tunes_whole_model): lr=0.0003" in protocol_card.to_text(card)
    assert protocol_card.build("digits-tiny", {"backbone": "scratch"})["full_tune_train"] == {}
    assert json.loads(protocol_card.to_json(card)) == card


def test_overrides_reach_the_card():
    card = protocol_card.build("digits-tiny", {"scenario.classes_per_task": "5", "train.lr": "0.01"})
    assert len(card["tasks"]) == 2 and card["train"]["lr"] == 0.01


def test_cli_prints_text_and_json(capsys):
    assert cli.main(["describe", "clip-tiny", "--format", "json"]) == 0
    card = json.loads(capsys.readouterr().out)
    assert card["tasks"][0]["templates"] and all("{}" in t for t in card["tasks"][0]["templates"])
    assert cli.main(["describe", "clip-tiny"]) == 0
    assert "tasks:" in capsys.readouterr().out


def test_bad_keys_and_unknown_scenarios_exit_2(capsys):
    assert cli.main(["describe", "digits-tiny", "--set", "strategy.rank=4"]) == 2
    assert cli.main(["describe", "no-such-scenario"]) == 2
    assert capsys.readouterr().err.count("\n") == 2


def test_missing_data_is_bad_input_before_any_run_folder(tmp_path, capsys, monkeypatch):
    from cl_suite.api import MissingData
    from scenarios.digits import DigitsTiny

    def missing(self):
        raise MissingData("dataset 'digits' not found at /nowhere: expected /nowhere/<class>/*.png")

    monkeypatch.setattr(DigitsTiny, "check_data", missing)
    assert cli.main(["run", "--scenario", "digits-tiny", "--strategy", "finetune", "--results", str(tmp_path)]) == 2
    assert "dataset 'digits' not found" in capsys.readouterr().err
    assert not any(tmp_path.rglob("run.json"))
