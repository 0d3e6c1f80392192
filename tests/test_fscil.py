"""FSCIL: protocols and bundled index files, fscil-tiny sessions, the prototype baseline, and `show`'s sessions."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from cl_suite import cli, config, metrics, results, runner
from scenarios import fscil_index, fscil_synth
from scenarios.fscil import FSCILTiny, TinyConfig
from strategies.prototype import Prototype


def run(root, strategy, tiny=False, **overrides):
    """A fscil-tiny run in the from-scratch regime (``backbone=scratch``) unless ``scenario__backbone`` says otherwise."""
    overrides = {"scenario__backbone": "scratch", **overrides}
    cfg = config.resolve({"scenario": "fscil-tiny", "strategy": strategy, "tiny": tiny},
                         {k.replace("__", "."): str(v) for k, v in overrides.items()})  # fmt: skip
    store = runner.start(cfg, root, out=io.StringIO(), progress=False)
    record, evals = results.load_run(store.path)
    R, n = results.score_matrix(pd.DataFrame(evals), record["metric"], record["num_tasks"])
    return store, record, R, n


def test_protocols_have_the_published_session_counts():
    cifar = fscil_index.PROTOCOLS["cifar100"].session_classes()
    assert [len(c) for c in cifar] == [60] + [5] * 8
    cub = fscil_index.PROTOCOLS["cub200"].session_classes()
    assert [len(c) for c in cub] == [100] + [10] * 10 and cub[1] == tuple(range(100, 110))
    assert sum(map(len, fscil_index.PROTOCOLS["mini_imagenet"].session_classes())) == 100
    with pytest.raises(ValueError, match="base"):
        fscil_index.Protocol("bad", num_classes=10, base_classes=4, ways=4, shots=1, sessions=3)


@pytest.mark.parametrize("name, lines", [("cifar100", 25), ("mini_imagenet", 25), ("cub200", 50), ("fscil_tiny", 10)])
def test_bundled_lists_have_ways_times_shots_lines(name, lines):
    protocol = fscil_index.PROTOCOLS[name]
    folder = fscil_index.index_dir(name)
    assert fscil_index.read_session(folder, 0) is None, "the base session trains on all base-class images"
    for s in range(1, protocol.sessions):
        listed = fscil_index.read_session(folder, s)
        assert len(listed) == lines == protocol.ways * protocol.shots and len(set(listed)) == lines


def test_bundled_cub_lists_name_the_protocol_classes():
    folder, protocol = fscil_index.index_dir("cub200"), fscil_index.PROTOCOLS["cub200"]
    for s, classes in enumerate(protocol.session_classes()[1:], start=1):
        numbers = [int(line.split("/")[2][:3]) - 1 for line in fscil_index.read_session(folder, s)]
        fscil_index.check_session(numbers, classes, protocol.shots, Path(f"session {s}"))


def test_bundled_tiny_lists_are_the_generated_ones():
    folder = fscil_index.index_dir("fscil_tiny")
    expected = fscil_synth.tiny_session_lists()
    assert [[int(x) for x in fscil_index.read_session(folder, s)] for s in range(1, 6)] == expected


def test_fscil_tiny_sessions():
    tasks = FSCILTiny(TinyConfig(backbone="scratch")).tasks()
    assert [t.name for t in tasks] == ["base"] + [f"session{s}" for s in range(1, 6)]
    assert tasks[0].classes == tuple(range(10)) and len(tasks[0].train) == 10 * 60 and len(tasks[0].test) == 10 * 20
    for s, task in enumerate(tasks[1:], start=1):
        labels = sorted(int(task.train[i]["y"]) for i in range(len(task.train)))
        assert labels == sorted([10 + 2 * (s - 1)] * 5 + [11 + 2 * (s - 1)] * 5), "2-way 5-shot, from the list"
        test_labels = {int(task.test[i]["y"]) for i in range(len(task.test))}
        assert test_labels == set(task.classes), "a session's test set holds its new classes only"
    item = tasks[0].train[0]
    assert item["x"].shape == (3, 16, 16) and item["x"].dtype == torch.float32
    tiny = FSCILTiny(tiny=True).tasks()
    assert len(tiny) == 2 and all(len(t.train) <= 64 and len(t.test) <= 64 for t in tiny)


def test_a_list_with_wrong_classes_is_refused(tmp_path):
    lists = fscil_synth.tiny_session_lists()
    lists[1][0] = lists[0][0]  # session 2 borrows an image of session 1's class
    fscil_index.write_sessions(tmp_path, lists, first=1)
    with pytest.raises(ValueError, match=r"session_3\.txt: expected 5 images of each class"):
        FSCILTiny(TinyConfig(index_dir=str(tmp_path))).tasks()


class FixedFeatures(torch.nn.Module):
    """A stand-in task model whose features are the inputs themselves."""

    def features(self, batch):
        return batch["x"]

    def predict(self, batch, task_id):
        return torch.zeros(len(batch["x"]), 1)


def test_prototype_predicts_nearest_class_mean_and_survives_a_state_dict_round_trip():
    from cl_suite.api import Context, Task
    from cl_suite.data import TensorDictDataset

    x = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    y = torch.tensor([3, 3, 5, 5])
    task = Task(index=0, name="t", train=TensorDictDataset(x, y), test=TensorDictDataset(x, y), classes=(3, 5))
    train = config.TrainConfig()
    ctx = Context(device=torch.device("cpu"), dtype=torch.float32, seed=0, num_tasks=1, setting="fscil",
                         train=train, make_loader=lambda ds, shuffle=False, batch_size=None:
                         torch.utils.data.DataLoader(ds, batch_size=batch_size or 2))  # fmt: skip
    strategy = Prototype(Prototype.Config(train_base=False))
    strategy.setup(FixedFeatures(), ctx)
    strategy.before_task(task)
    assert strategy.trains is False
    strategy.after_task(task)
    scores = strategy.predict({"x": torch.tensor([[0.8, 0.3], [0.2, 0.7]])}, None)
    assert scores.shape == (2, 6) and scores.argmax(-1).tolist() == [3, 5]
    restored = Prototype(Prototype.Config(train_base=False))
    restored.setup(FixedFeatures(), ctx)
    restored.load_state_dict(strategy.state_dict())
    assert torch.equal(restored.prototypes, strategy.prototypes) and restored.class_ids.tolist() == [3, 5]
    with pytest.raises(ValueError, match="cosine, euclidean"):
        Prototype(Prototype.Config(metric="manhattan"))


def test_prototype_keeps_old_sessions_and_finetune_drops_more(results_root):
    _, proto, R, n = run(results_root, "prototype", train__epochs=5)
    assert proto["status"] == "success" and R.shape == (7, 6)
    assert proto["cost"]["added_inference_params"] == 20 * 32, "one prototype per class"
    for j in range(6):  # frozen features, fixed prototypes: a new class can only take predictions away
        assert all(R[i + 1, j] <= R[i, j] for i in range(j + 1, 6))
    sessions = metrics.fscil_sessions(R, n)
    assert proto["summary"]["fscil_avg"] == pytest.approx(sessions.mean(), abs=1e-4)
    assert proto["summary"]["fscil_pd"] == pytest.approx(sessions[0] - sessions[-1], abs=1e-4)
    assert sessions[0] > 40, "the base session is learnt (10 classes, chance is 10%)"
    _, fine, _, _ = run(results_root, "finetune", train__epochs=5)
    assert fine["summary"]["fscil_pd"] > proto["summary"]["fscil_pd"] + 10
    assert fine["summary"]["fscil_base"] < proto["summary"]["fscil_base"]


def test_show_prints_per_session_accuracy(results_root, capsys):
    store, record, R, n = run(results_root, "prototype", tiny=True)
    assert cli.main(["show", store.path.name, "--results", str(results_root)]) == 0
    out = capsys.readouterr().out
    sessions = metrics.fscil_sessions(R, n)
    assert "per-session accuracy" in out and f"session1={sessions[1]:.2f}" in out and "fscil_hm" in out
    assert np.isclose(record["summary"]["fscil_hm"], metrics.fscil_hm(R, n), atol=1e-4)
