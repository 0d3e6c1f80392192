"""The pretrained tiny tier: the tiny CLIP image tower as a backbone of digits-tiny / fscil-tiny / avalanche-digits,
the current-task head loss of rehearsal-free methods, run records without checkpoints, the published tier (built on
cl-suite sweep), and the behavioural gates (slow: each adapter method beats chance and forgets less than finetune)."""

from __future__ import annotations

import io
import json

import pytest
import torch

from cl_suite import config, published, results, runner
from cl_suite.api import Task
from cl_suite.cli import main
from cl_suite.models.classifier import ClassifierModel, head_loss
from cl_suite.models.tiny_clip_vision import TinyClipVision, to_clip_input


# -- the backbone ----------------------------------------------------------------------------------------------
def test_tower_is_the_clip_image_tower_with_split_layers():
    """Splitting attention and the patch conv into nn.Linear layers must not change the function: the tower's
    features equal open_clip's own visual forward (before the projection) on the same weights."""
    from cl_suite.models import tiny_clip

    tower = TinyClipVision().eval()
    reference = tiny_clip.load().visual.eval()
    reference.proj = None
    x = to_clip_input(torch.rand(4, 1, 8, 8))
    assert x.shape == (4, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(tower(x), reference(x), rtol=1e-4, atol=1e-4)
    roles = [t.role for t in tower.linear_targets()]
    assert roles.count("q") == len(tower.blocks()) == 4 and roles.count("fc2") == 4 and roles[0] == "patch"
    assert all(isinstance(t.module, torch.nn.Linear) for t in tower.linear_targets())


@pytest.mark.parametrize("scenario", ["digits-tiny", "fscil-tiny", "avalanche-digits"])
def test_backbone_switch_keeps_the_regimes_apart(scenario):
    from cl_suite import registry

    cls = registry.load("scenario", scenario)
    pretrained = cls(cls.Config(backbone="tiny-clip"), tiny=True)
    scratch = cls(cls.Config(backbone="scratch"), tiny=True)
    # defaults: the pretrained regime the adapter methods are written for; avalanche-digits is the scratch board
    assert cls.Config().backbone == ("scratch" if scenario == "avalanche-digits" else "tiny-clip")
    assert pretrained.backbone.startswith("tiny-clip-vit(pretrained,sha=") and "vit" in scratch.backbone
    assert pretrained.backbone != scratch.backbone  # the leaderboard groups by this id
    if scenario == "avalanche-digits":
        pytest.importorskip("avalanche")
    task = pretrained.tasks()[0]
    assert task.train[0]["x"].shape == (3, 32, 32)
    model = pretrained.build_model(None)
    assert isinstance(model.backbone, TinyClipVision) and model.head.in_features == 128


@pytest.mark.parametrize("scenario", ["digits-tiny", "fscil-tiny", "avalanche-digits"])
def test_whole_model_fine_tuning_gets_the_pretrained_towers_lr(scenario):
    """On tiny-clip, strategies that tune the whole model train at 3e-4 (3e-3 wipes out the pretrained tower; README);
    adapters and the scratch regime keep their recipe; the strategy's own defaults and the user win."""

    def lr(strategy, *overrides):
        sets = dict(o.split("=", 1) for o in overrides)
        return config.resolve({"scenario": scenario, "strategy": strategy}, sets).train.lr

    for strategy in ("finetune", "joint", "avalanche-replay"):
        assert lr(strategy, "backbone=tiny-clip") == 3e-4
        assert lr(strategy, "backbone=scratch") == 3e-3
        assert lr(strategy, "backbone=tiny-clip", "train.lr=0.01") == 0.01
    for strategy in ("lora", "sema", "coso", "prototype"):  # their own recipe, the same in both regimes
        assert lr(strategy, "backbone=tiny-clip") == lr(strategy, "backbone=scratch")


def test_bad_backbone_is_bad_input_before_any_run_folder(tmp_path, capsys):
    code = main(["run", "--scenario", "digits-tiny", "--strategy", "finetune", "--set", "backbone=resnet",
                 "--results", str(tmp_path)])  # fmt: skip
    assert code == 2 and "unknown backbone 'resnet'" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


# -- the head loss ---------------------------------------------------------------------------------------------
def test_head_loss_trains_only_the_current_tasks_classes():
    from cl_suite.models.tiny_vit import TinyViT

    torch.manual_seed(0)
    model = ClassifierModel(TinyViT(8, 2, dim=16, depth=1, heads=2), 16, [(0, 1), (2, 3)], 4, "tiny")
    task = Task(index=1, name="t1", train=None, test=None, classes=(2, 3))
    for t in ((0, 1), (2, 3)):
        model.on_task_start(Task(index=0, name="t", train=None, test=None, classes=t))
    batch = {"x": torch.rand(6, 1, 8, 8), "y": torch.tensor([2, 3, 2, 3, 2, 3])}
    head_loss(model, batch, task, "task").backward()
    grad = model.head.weight.grad
    assert grad[[0, 1]].abs().sum() == 0 and grad[[2, 3]].abs().sum() > 0  # old classes' rows are not pushed down
    model.zero_grad()
    torch.testing.assert_close(head_loss(model, batch, task, "model"), model.loss(batch, task))
    assert model.head.weight.grad is None or model.head.weight.grad[[0, 1]].abs().sum() == 0
    head_loss(model, batch, task, "model").backward()
    assert model.head.weight.grad[[0, 1]].abs().sum() > 0  # over every seen class, old rows do move
    with pytest.raises(ValueError, match="unknown head loss"):
        head_loss(model, batch, task, "nope")


# -- records without checkpoints, the published tier -----------------------------------------------------------
def test_keep_checkpoints_none_leaves_only_the_record(tmp_path):
    cfg = config.resolve({}, {"scenario.name": "digits-tiny", "strategy.name": "finetune", "tiny": "true",
                              "train.max_steps": "2", "train.keep_checkpoints": "none", "backbone": "scratch"})  # fmt: skip
    store = runner.start(cfg, tmp_path, progress=False, out=io.StringIO())
    assert store.read_record()["status"] == "success"
    assert not list((store.path / "checkpoints").glob("*.pt"))


def test_published_tier_adds_only_new_strategies_cells(tmp_path, monkeypatch):
    """Two invocations: the second, with one more strategy registered, runs only that strategy's cells; the
    manifest records machine, versions and wall time of each invocation; no checkpoint is kept."""
    tier = (published.Entry("digits-tiny", seeds="0-1", overrides=("tiny=true", "train.max_steps=2",
                                                                    "backbone=scratch")),)  # fmt: skip
    monkeypatch.setattr(published, "TIER", tier)
    out = io.StringIO()
    assert published.run_published(tmp_path, strategies=["finetune"], jobs=1, out=out) == 0
    assert published.run_published(tmp_path, strategies=["finetune", "zero-shot"], jobs=1, out=out) == 0
    text = out.getvalue()
    assert "2 cells" in text and "4 cells" in text and "2 already finished, 0 to resume, 2 to start" in text
    runs = results.load_runs(tmp_path).runs
    assert sorted(runs["strategy"]) == ["finetune", "finetune", "zero-shot", "zero-shot"]
    assert not list(tmp_path.glob("runs/*/checkpoints/*.pt"))
    manifest = json.loads((tmp_path / published.MANIFEST).read_text())["invocations"]
    assert len(manifest) == 2 and manifest[1]["strategies"] == ["finetune", "zero-shot"]
    assert manifest[0]["machine"]["cpus"] and manifest[0]["environment"]["packages"]["torch"]
    assert manifest[0]["sweeps"][0]["wall_s"] > 0 and "train.keep_checkpoints=none" in manifest[0]["sweeps"][0]["overrides"]


def test_published_tier_names_every_tiny_scenario_and_registered_strategy():
    from cl_suite import registry

    scenarios = {e.scenario for e in published.TIER}
    assert {"digits-tiny", "fscil-tiny", "avalanche-digits", "clip-tiny", "organ-tiny", "llm-tiny"} <= scenarios
    assert scenarios <= set(registry.names("scenario"))
    args = published.sweep_args(published.TIER[0], registry.names("strategy"))
    assert args["strategies"].split(",") == registry.names("strategy") and args["seeds"] == "0-2"


def test_readme_tables_print_one_table_per_scenario(tmp_path, capsys):
    tier = published.Entry("digits-tiny", seeds="0", overrides=("tiny=true", "train.max_steps=2", "backbone=scratch"))
    from cl_suite.sweep import run_sweep

    run_sweep(root=tmp_path, out=io.StringIO(), **published.sweep_args(tier, ["finetune"]))
    assert main(["leaderboard", "--results", str(tmp_path), "--format", "markdown", "--per-scenario"]) == 0
    shown = capsys.readouterr().out
    assert shown.startswith("#### digits-tiny\n") and "| finetune" in shown


# -- behavioural gates -----------------------------------------------------------------------------------------
GATED = ("sema", "mora", "rank-selective-lora", "coso", "orthogonal-svd")
SEEDS = (0, 1, 2)
CHANCE = 10.0  # digits-tiny: 10 classes


@pytest.fixture(scope="module")
def gate_runs(tmp_path_factory) -> dict[str, list[dict]]:
    """finetune and the gated methods on digits-tiny with the default (pretrained tiny CLIP) backbone and every
    default budget, three seeds each."""
    root = tmp_path_factory.mktemp("gates")
    out: dict[str, list[dict]] = {}
    for strategy in ("finetune", *GATED):
        for seed in SEEDS:
            cfg = config.resolve({}, {"scenario.name": "digits-tiny", "strategy.name": strategy, "seed": str(seed),
                                      "train.keep_checkpoints": "none"})  # fmt: skip
            store = runner.start(cfg, root, progress=False, out=io.StringIO())
            out.setdefault(strategy, []).append(store.read_record()["summary"])
    return out


def _mean(rows: list[dict], key: str) -> float:
    return sum(r[key] for r in rows) / len(rows)


@pytest.mark.slow
@pytest.mark.parametrize("strategy", GATED)
def test_gate_well_above_chance_and_forgets_less_than_finetune(gate_runs, strategy):
    last, forgetting = _mean(gate_runs[strategy], "last"), _mean(gate_runs[strategy], "forgetting")
    assert last >= 3 * CHANCE, f"{strategy}: mean Last {last:.1f} over {SEEDS}"
    assert forgetting < _mean(gate_runs["finetune"], "forgetting"), f"{strategy}: mean forgetting {forgetting:.1f}"
    assert last > _mean(gate_runs["finetune"], "last")


def test_prototype_trains_its_base_only_on_a_backbone_from_scratch():
    """SimpleCIL on a pretrained backbone (nothing trains), the decoupled FSCIL baseline on one from scratch."""
    from cl_suite.models.tiny_vit import TinyViT
    from strategies.prototype import Prototype

    task = Task(index=0, name="t0", train=None, test=None, classes=(0, 1))
    for pretrained, expected in ((True, False), (False, True)):
        model = ClassifierModel(TinyViT(8, 2, dim=16, depth=1, heads=2), 16, [(0, 1)], 2, "tiny", pretrained=pretrained)
        strategy = Prototype()
        strategy.setup(model, None)
        strategy.before_task(task)
        assert strategy.trains is expected
    forced = Prototype(Prototype.Config(train_base=True))
    forced.setup(ClassifierModel(TinyViT(8, 2, dim=16, depth=1, heads=2), 16, [(0, 1)], 2, "tiny", pretrained=True), None)
    forced.before_task(task)
    assert forced.trains is True


def test_published_rejects_a_scenario_outside_the_tier(tmp_path, capsys):
    assert main(["published", "--scenarios", "mtil", "--results", str(tmp_path)]) == 2
    assert "not in the published tier: mtil" in capsys.readouterr().err
    assert not (tmp_path / published.MANIFEST).exists()
