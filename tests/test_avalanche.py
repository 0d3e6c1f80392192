"""Avalanche integration: benchmarks <-> tasks, avalanche-* baselines through our runner, and our runner's
training against Avalanche's own loop on the same model and data."""

from __future__ import annotations

import copy
import io

import numpy as np
import pandas as pd
import pytest
import torch

from cl_suite import config, results, runner
from cl_suite.api import Context
from cl_suite.config import ConfigError, TrainConfig

pytest.importorskip("avalanche")

from avalanche.benchmarks import nc_benchmark

from cl_suite.avalanche_bridge import from_avalanche, to_avalanche
from scenarios.avalanche import AvalancheDigits
from scenarios.digits import DigitsTiny


def _run(results_root, strategy, scenario="digits-tiny", **overrides):
    cfg = config.resolve({"scenario": scenario, "strategy": strategy, "tiny": True},
                         {k.replace("__", "."): str(v) for k, v in overrides.items()})  # fmt: skip
    return runner.start(cfg, results_root, out=io.StringIO(), progress=False)


def _matrix(path):
    record, evals = results.load_run(path)
    return results.score_matrix(pd.DataFrame(evals), record["metric"], record["num_tasks"])[0], record


class _Labelled(torch.utils.data.TensorDataset):
    def __init__(self, x, y):
        super().__init__(x, y)
        self.targets = y.tolist()


def test_from_avalanche_and_back():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(120, 3, generator=g), torch.arange(120) % 6
    bm = nc_benchmark(_Labelled(x, y), _Labelled(x[:60], y[:60]), n_experiences=3, task_labels=False,
                      fixed_class_order=[4, 5, 0, 1, 2, 3], seed=0)  # fmt: skip
    tasks = from_avalanche(bm)
    assert [t.classes for t in tasks] == [(4, 5), (0, 1), (2, 3)]
    assert [len(t.train) for t in tasks] == [40, 40, 40] and [len(t.test) for t in tasks] == [20, 20, 20]
    item = tasks[1].train[0]
    assert set(item) == {"x", "y"} and int(item["y"]) in (0, 1) and item["x"].shape == (3,)
    assert any(torch.equal(item["x"], row) for row in x[y == item["y"]])  # the data itself, not a copy of shape
    small = from_avalanche(bm, max_tasks=2, limit=10)
    assert len(small) == 2 and len(small[0].train) == 10
    assert sorted(int(small[0].train[i]["y"]) for i in range(10)) == [4] * 5 + [5] * 5  # class balanced
    back = to_avalanche(tasks)
    assert len(back.train_stream) == 3
    assert sorted(set(back.train_stream[2].dataset.targets)) == [2, 3]
    assert len(back.test_stream[0].dataset) == 20


def test_avalanche_digits_is_digits_tiny_through_avalanche():
    for backbone in ("scratch", "tiny-clip"):  # the same data under either backbone
        _same_tasks(DigitsTiny(DigitsTiny.Config(backbone=backbone)).tasks(),
                    AvalancheDigits(AvalancheDigits.Config(backbone=backbone)).tasks())  # fmt: skip
    tiny = AvalancheDigits(tiny=True).tasks()
    assert len(tiny) == 2 and len(tiny[0].train) == 64


def _same_tasks(ours, theirs) -> None:
    assert [t.classes for t in theirs] == [t.classes for t in ours]
    for a, b in zip(ours, theirs):
        for split in ("train", "test"):
            xa = torch.stack([getattr(a, split)[i]["x"] for i in range(len(getattr(a, split)))])
            xb = torch.stack([getattr(b, split)[i]["x"] for i in range(len(getattr(b, split)))])
            assert xa.shape == xb.shape  # same split, maybe another order
            assert torch.allclose(xa.sum(0), xb.sum(0), atol=1e-4)


def test_naive_through_the_adapter_equals_finetune(results_root):
    a, _ = _matrix(_run(results_root, "finetune", train__max_steps=4).path)
    b, _ = _matrix(_run(results_root, "avalanche-naive", train__max_steps=4).path)
    np.testing.assert_array_equal(a, b)


def test_our_runner_matches_avalanche_own_loop(results_root):
    """Finetune in our runner and Avalanche's Naive.train() on the same initial model and data reach the same
    weights. Full-batch plain SGD makes the data order irrelevant (each loader's shuffle draws differently)."""
    from avalanche.training import Naive

    epochs, lr = 3, 0.5
    store = _run(results_root, "finetune", train__optimizer="sgd", train__momentum=0, train__lr=lr,
                 train__epochs=epochs, train__batch_size=64, scenario__backbone="scratch")  # fmt: skip
    ours = torch.load(store.latest_checkpoint()[1], weights_only=True)["strategy"]

    scenario = DigitsTiny(DigitsTiny.Config(backbone="scratch"), tiny=True)
    tasks = scenario.tasks()
    runner.seed_everything(0)  # the runner seeds before building the model: same initial weights
    model = scenario.build_model(None)
    view = _view(model)
    strategy = Naive(model=view, optimizer=torch.optim.SGD(view.parameters(), lr=lr),
                     criterion=torch.nn.CrossEntropyLoss(), train_mb_size=64, train_epochs=epochs,
                     evaluator=None, device="cpu")  # fmt: skip
    for task, experience in zip(tasks, to_avalanche(tasks).train_stream):
        model.on_task_start(task)
        strategy.train(experience)
    for name, value in model.state_dict().items():
        torch.testing.assert_close(ours[f"model.{name}"], value, atol=1e-5, rtol=1e-4)
    _, record = _matrix(store.path)
    assert record["status"] == "success"


def _view(model):
    from strategies.avalanche.adapter import LogitsView

    return LogitsView(model)


def test_replay_forgets_less_than_finetune(results_root):
    def forgetting(strategy):
        _, record = _matrix(_run(results_root, strategy, train__epochs=20).path)
        return record["summary"]["forgetting"]

    fine, replay = forgetting("finetune"), forgetting("avalanche-replay")
    assert fine > 40  # the first task is forgotten almost entirely
    assert replay < fine - 20, (replay, fine)


RESUMABLE = ["avalanche-ewc", "avalanche-si", "avalanche-lwf", "avalanche-replay", "avalanche-gem",
             "avalanche-agem", "avalanche-gdumb", "avalanche-mas"]  # fmt: skip


@pytest.mark.slow  # tests/test_conformance.py resumes every strategy on digits-tiny in the default run
@pytest.mark.parametrize("strategy", RESUMABLE)
def test_resume_restores_plugin_state(strategy, results_root):
    import shutil

    store = _run(results_root, strategy, train__max_steps=3, train__keep_checkpoints="all")
    R, record = _matrix(store.path)
    assert record["status"] == "success" and R.shape == (3, 2)
    copy_dir = results_root / "runs" / "resumed"
    shutil.copytree(store.path, copy_dir)
    (copy_dir / "checkpoints" / "task-001.pt").unlink()
    results.RunStore(copy_dir).update(status="running", run_id="resumed")
    runner.resume(copy_dir, out=io.StringIO(), progress=False)
    np.testing.assert_array_equal(_matrix(copy_dir)[0], R)


def test_hyperparameters_reach_the_avalanche_plugin():
    from strategies.avalanche.baselines import AvalancheEWC, AvalancheReplay

    cfg = config.resolve({"scenario": "digits-tiny", "strategy": "avalanche-ewc"}, {"strategy.ewc_lambda": "7"})
    strategy = AvalancheEWC(cfg.strategy_config)
    scenario = DigitsTiny(tiny=True)
    ctx = Context(device=torch.device("cpu"), dtype=torch.float32, seed=0, num_tasks=2, setting="cil",
                  train=TrainConfig(), make_loader=lambda ds, **kw: torch.utils.data.DataLoader(ds))  # fmt: skip
    strategy.setup(scenario.build_model(ctx), ctx)
    assert [type(p).__name__ for p in strategy._plugins] == ["EWCPlugin", "Clock"]
    assert strategy._plugins[0].ewc_lambda == 7.0
    replay = AvalancheReplay(AvalancheReplay.Config(mem_size=30))
    replay.setup(copy.deepcopy(strategy.model), ctx)
    assert replay._plugins[0].storage_policy.max_size == 30
    with pytest.raises(ConfigError, match=r"strategy\.ewc_lambda"):
        config.resolve({"scenario": "digits-tiny", "strategy": "avalanche-ewc"}, {"strategy.lambda": "1"})
