"""alora: the AB-LoRA ablation score, pruning of the lowest scores, reallocation to modules that lost none, and the
total rank held within the budget through every round; the surviving ranks are merged after the task."""

from __future__ import annotations

import torch
from toy_mlp import ToyMLP, context, make_task, train_steps

from strategies.alora import ALoRA, ALoRAConfig


def _task():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 16, generator=g, dtype=torch.float64)
    y = (x[:, 0] > 0).long() + 2 * (x[:, 1] > 0).long()
    return make_task(0, x, y)


def _strategy(**kw) -> ALoRA:
    torch.manual_seed(0)
    strategy = ALoRA(ALoRAConfig(rank=4, targets=("fc1", "fc2"), **kw))
    strategy.setup(ToyMLP(), context())
    return strategy


def test_importance_is_the_loss_increase_when_the_rank_is_ablated():
    strategy = _strategy(score_batches=2)
    task = _task()
    strategy.before_task(task)
    train_steps(strategy, task, 20)
    scores = strategy.importance(task)
    assert len(scores) == strategy.budget == 8
    batches = strategy._score_batches(task)

    def loss():
        with torch.no_grad():
            return sum(float(strategy.model.loss(b, task)) for b in batches) / len(batches)

    group = strategy.layers["fc2"].groups[0]
    full = loss()
    with torch.no_grad():
        saved = group.B[1].clone()
        group.B[1] = 0
        ablated = loss()
        group.B[1] = saved
    assert abs(scores[("fc2", 0, 1)] - (ablated - full)) < 1e-12  # S = −loss: S(M) − S(M \ i) = loss(M \ i) − loss(M)
    with torch.no_grad():
        group.B[2] = 0  # a rank that contributes nothing scores exactly 0
    assert strategy.importance(task)[("fc2", 0, 2)] == 0.0


def test_total_rank_stays_within_the_budget_through_reallocation():
    strategy = _strategy(prune_per_round=3, rounds=4)
    task = _task()
    strategy.before_task(task)
    budget = strategy.budget
    assert strategy.total_rank() == budget
    train_steps(strategy, task, 20)
    while (epochs := strategy.next_round(task)) is not None:
        assert epochs == 1
        log = strategy._rounds_log[-1]
        assert strategy.total_rank() <= budget and log["total_rank"] == strategy.total_rank()
        assert log["pruned"] == log["added"] == 3 and strategy.total_rank() == budget
        train_steps(strategy, task, 10)
    assert len(strategy._rounds_log) == 4  # where ranks move is data-dependent: see the reallocation tests below
    strategy.after_task(task)
    stats = strategy.strategy_stats()
    assert stats["final_total_rank"] <= budget and stats["added_inference_params"] == 0


def test_pruning_takes_the_lowest_scores_and_gives_them_to_modules_that_lost_none():
    strategy = _strategy(prune_per_round=2)
    task = _task()
    strategy.before_task(task)
    scores = {("fc1", 0, i): 1.0 + i for i in range(4)} | {("fc2", 0, i): float(i) - 5 for i in range(4)}
    kept_b = strategy.layers["fc2"].groups[0].B[2:].clone()
    log = strategy.prune_and_reallocate(scores)
    assert log == {"pruned": 2, "added": 2, "total_rank": 8}
    assert strategy.allocation == {"fc1": 6, "fc2": 2}
    torch.testing.assert_close(strategy.layers["fc2"].groups[0].B, kept_b)  # ranks 0 and 1 (lowest) went
    fresh = strategy.layers["fc1"].groups[-1]
    assert fresh.rank == 2 and float(fresh.B.detach().abs().sum()) == 0.0 and fresh.B.requires_grad
    assert float(fresh.scale) == float(strategy.layers["fc1"].groups[0].scale)  # every rank weighted α / r0


def test_when_every_module_lost_a_rank_the_budget_goes_to_the_strongest_survivors():
    strategy = _strategy(prune_per_round=2)
    task = _task()
    strategy.before_task(task)
    scores = {("fc1", 0, i): float(i) for i in range(4)} | {("fc2", 0, i): 2.0 * i for i in range(4)}
    log = strategy.prune_and_reallocate(scores)  # rank 0 of each module goes; fc2's survivors score higher
    assert log == {"pruned": 2, "added": 2, "total_rank": 8}
    assert strategy.allocation == {"fc1": 4, "fc2": 4}  # round-robin over fc2 then fc1
    assert [g.rank for g in strategy.layers["fc2"].groups] == [3, 1]


def test_carry_allocation_starts_the_next_task_at_the_last_allocation():
    for carry in (True, False):
        strategy = _strategy(prune_per_round=2, carry_allocation=carry)
        task = _task()
        strategy.before_task(task)
        scores = {("fc1", 0, i): 1.0 + i for i in range(4)} | {("fc2", 0, i): float(i) - 5 for i in range(4)}
        strategy.prune_and_reallocate(scores)
        strategy.after_task(task)
        assert all(not layer.groups for layer in strategy.layers.values())  # merged
        strategy.before_task(task)
        ranks = {name: layer.rank for name, layer in strategy.layers.items()}
        assert ranks == ({"fc1": 6, "fc2": 2} if carry else {"fc1": 4, "fc2": 4})
