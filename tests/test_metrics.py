"""Metrics on hand-made score matrices, and a cross-check against Avalanche's metric classes."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cl_suite import metrics

# rows: before training, after task 0, 1, 2; columns: tasks 0, 1, 2
R = np.array([
    [10.0, 20.0, 30.0],
    [90.0, 25.0, 35.0],
    [95.0, 80.0, 40.0],
    [70.0, 60.0, 85.0],
])  # fmt: skip


def test_last_and_average_incremental():
    assert metrics.last(R) == pytest.approx((70 + 60 + 85) / 3)
    steps = [90.0, (95 + 80) / 2, (70 + 60 + 85) / 3]
    assert metrics.seen_average(R).tolist() == pytest.approx(steps)
    assert metrics.avg_inc(R) == pytest.approx(np.mean(steps))


def test_bwt_fwt_and_both_forgettings():
    assert metrics.bwt(R) == pytest.approx(((70 - 90) + (60 - 80)) / 2)
    assert metrics.fwt(R) == pytest.approx(((25 - 20) + (40 - 30)) / 2)
    # max-based: task 0 peaked at 95 after task 1, so it forgot 25, not 20
    assert metrics.forgetting(R) == pytest.approx(((95 - 70) + (80 - 60)) / 2)
    assert metrics.forgetting_first_last(R) == pytest.approx(((90 - 70) + (80 - 60)) / 2)
    assert metrics.forgetting_first_last(R) == pytest.approx(-metrics.bwt(R))


def test_mtil_transfer_avg_last():
    # Transfer: column 1 over rows after task 0; column 2 over rows after tasks 0 and 1
    assert metrics.mtil_transfer(R) == pytest.approx((25 + (35 + 40) / 2) / 2)
    assert metrics.mtil_avg(R) == pytest.approx(R[1:].mean())
    assert metrics.summarize(R, ["mtil_last"])["mtil_last"] == pytest.approx(metrics.last(R), abs=1e-6)


def test_trace_bwt_divides_by_T():
    assert metrics.trace_bwt(R) == pytest.approx(((70 - 90) + (60 - 80) + 0) / 3)
    assert metrics.trace_op(R) == metrics.last(R)


def test_fscil_sessions_weight_by_test_size():
    n = np.array([600, 50, 50])  # a big base session, two small novel sessions
    sessions = metrics.fscil_sessions(R, n)
    assert sessions[1] == pytest.approx((95 * 600 + 80 * 50) / 650)
    assert metrics.fscil_pd(R, n) == pytest.approx(sessions[0] - sessions[-1])
    assert metrics.fscil_avg(R, n) == pytest.approx(sessions.mean())
    base, novel = metrics.fscil_base(R, n), metrics.fscil_novel(R, n)
    assert (base, novel) == (70.0, pytest.approx((60 + 85) / 2))
    assert metrics.fscil_hm(R, n) == pytest.approx(2 * base * novel / (base + novel))


def test_segmentation_old_new_all_weighted_by_organs():
    organs = np.array([1, 3, 2])
    assert metrics.seg_new(R, organs) == 85.0
    assert metrics.seg_old(R, organs) == pytest.approx((70 * 1 + 60 * 3) / 4)
    assert metrics.seg_all(R, organs) == pytest.approx((70 + 180 + 170) / 6)
    assert metrics.organ_means({"liver": 0.9, "spleen": 0.7, "kidney": 0.5}, ["liver", "spleen"], ["kidney"]) == {
        "old": pytest.approx(0.8), "new": 0.5, "all": pytest.approx(0.7)}


def test_single_task_summaries_are_undefined_not_zero():
    one = np.array([[10.0], [80.0]])
    out = metrics.summarize(one, ["last", "bwt", "forgetting", "fwt"])
    assert out == {"last": 80.0, "bwt": None, "forgetting": None, "fwt": None}


def test_directions_follow_the_metric():
    assert metrics.direction("forgetting", "max") == "min"
    assert metrics.direction("last", "max") == "max"
    assert metrics.direction("forgetting", "min") == "max"
    with pytest.raises(ValueError):
        metrics.direction("last", "up")


def test_bad_shapes_and_unknown_names_are_errors():
    with pytest.raises(ValueError, match="shape"):
        metrics.last(np.zeros((3, 3)))
    with pytest.raises(KeyError, match="unknown summary"):
        metrics.summarize(R, ["nope"])


# -- cross-check against Avalanche --------------------------------------------------------------------------------
def test_forgetting_and_bwt_match_avalanche_classes():
    """Avalanche's Forgetting/BWT are first-minus-last per experience; our forgetting_first_last and bwt average
    them over all experiences but the last. Its functional forgetting matrix gives the same per-experience values.
    Named difference: our `forgetting` is max-based (Chaudhry et al.), which Avalanche does not implement; on R it
    differs (22.5 vs 20.0) because task 0 peaked after task 1."""
    from avalanche.evaluation.functional import forgetting as av_forgetting_matrix
    from avalanche.evaluation.metrics.forgetting_bwt import BWT, Forgetting

    T = R.shape[1]
    av_forget, av_bwt = Forgetting(), BWT()
    for k in range(T):
        for metric in (av_forget, av_bwt):
            metric.update(k, R[k + 1, k], initial=True)
            metric.update(k, R[-1, k])
    per_exp = av_forget.result()
    mean_before_last = np.mean([per_exp[k] for k in range(T - 1)])
    assert metrics.forgetting_first_last(R) == pytest.approx(mean_before_last)
    assert metrics.bwt(R) == pytest.approx(np.mean([av_bwt.result()[k] for k in range(T - 1)]))
    matrix = av_forgetting_matrix(R[1:])
    assert matrix[-1, : T - 1].mean() == pytest.approx(metrics.forgetting_first_last(R))
    assert metrics.forgetting(R) != pytest.approx(metrics.forgetting_first_last(R))


def test_accuracy_matches_avalanche_accuracy():
    """Our classifier evaluation (percent) against Avalanche's Accuracy metric (a fraction) on the same predictions."""
    import torch
    from avalanche.evaluation.metrics import Accuracy

    from cl_suite.api import Context, Task
    from cl_suite.config import TrainConfig
    from cl_suite.data import TensorDictDataset
    from cl_suite.models.classifier import evaluate_accuracy

    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(97, 4, generator=g), torch.randint(0, 3, (97,), generator=g)
    weights = torch.randn(4, 3, generator=g)
    task = Task(0, "t", TensorDictDataset(x, y), TensorDictDataset(x, y))
    ctx = Context(torch.device("cpu"), torch.float32, 0, 1, "cil", TrainConfig(eval_batch_size=10),
                  make_loader=lambda ds, shuffle=False, batch_size=None: torch.utils.data.DataLoader(ds, batch_size))
    ours = evaluate_accuracy(lambda batch: batch["x"] @ weights, task, ctx)
    avalanche_acc = Accuracy()
    avalanche_acc.update(x @ weights, y)
    assert ours["n"] == 97
    assert math.isclose(ours["acc"], 100 * avalanche_acc.result(), rel_tol=1e-9)
