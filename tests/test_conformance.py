"""Every registered strategy × every compatible tiny scenario, generated from the registry (no hand-kept table).

Each pair runs end to end on CPU in --tiny mode and must write a valid record; then the run is resumed from its
first checkpoint and must reach the same score matrix, which catches strategy state a checkpoint would miss.
"""

from __future__ import annotations

import io
import json

import numpy as np
import pandas as pd
import pytest
from conftest import resume_from_first_checkpoint

from cl_suite import config, registry, results, runner
from cl_suite.api import incompatibility


def _pairs():
    pairs = []
    for scenario in registry.names("scenario"):
        if not scenario.endswith("-tiny"):
            continue
        scenario_cls = registry.load("scenario", scenario)
        for strategy in registry.names("strategy"):
            if incompatibility(scenario_cls, registry.load("strategy", strategy)) is None:
                pairs.append((scenario, strategy))
    return pairs


PAIRS = _pairs()


def _matrix(folder):
    record, evals = results.load_run(folder)
    return results.score_matrix(pd.DataFrame(evals), record["metric"], record["num_tasks"])[0], record


def test_every_strategy_has_a_tiny_scenario():
    covered = {strategy for _, strategy in PAIRS}
    assert covered == set(registry.names("strategy")), f"untested strategies: {set(registry.names('strategy')) - covered}"


@pytest.mark.parametrize(("scenario", "strategy"), PAIRS, ids=[f"{a}/{b}" for a, b in PAIRS])
def test_runs_and_resumes(scenario, strategy, results_root):
    cfg = config.resolve({"scenario": scenario, "strategy": strategy, "tiny": True},
                         {"train.max_steps": "3", "train.keep_checkpoints": "all"})  # fmt: skip
    store = runner.start(cfg, results_root, out=io.StringIO(), progress=False)
    R, record = _matrix(store.path)
    T = record["num_tasks"]
    assert record["status"] == "success" and 1 <= T <= 2
    assert R.shape == (T + 1, T) and np.isfinite(R).all()
    assert set(record["summary"]) == set(registry.load("scenario", scenario).summary)
    assert {"wall_s", "trainable_params", "added_inference_params", "total_params"} <= set(record["cost"])
    assert [s["task"] for s in record["strategy_stats"]] == list(range(T))
    json.dumps(record["strategy_stats"])
    assert results.load_runs(results_root).runs["run_id"].tolist() == [store.path.name]

    if T < 2:
        return
    resumed, _ = _matrix(resume_from_first_checkpoint(store.path))
    np.testing.assert_array_equal(resumed, R)
