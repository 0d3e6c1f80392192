"""mamba-fscil: the selective scan against the naive recurrence, the class-sensitive losses, the ETF head, the
session schedule, and the frozen base branch in a run on fscil-tiny.

Expected values come from the official code, xiaojieli0903/Mamba-FSCIL @ f253969ac3ea32a71cd3bfc242907ad69b1b0b9d
(file named in each test); the recurrence is the one of ``selective_scan_ref`` in its vendored mamba_ssm.
"""

from __future__ import annotations

import io
import math

import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from cl_suite import config, results, runner
from strategies.mamba_fscil import losses, schedule
from strategies.mamba_fscil.neck import DualSelectiveNeck, NeckShape
from strategies.mamba_fscil.scan import selective_scan
from strategies.mamba_fscil.ssm import SelectiveSSM


def naive_scan(u, delta, A, B, C, D, z, delta_bias):
    """h_t = exp(delta_t A) h_{t-1} + delta_t B_t u_t; y_t = C_t . h_t + D u_t; times silu(z_t), one step at a time."""
    delta = F.softplus(delta + delta_bias[:, None])
    batch, dim, length = u.shape
    h = torch.zeros(batch, dim, A.shape[1], dtype=torch.float64)
    ys = []
    for t in range(length):
        h = torch.exp(delta[:, :, t, None] * A) * h + delta[:, :, t, None] * B[:, None, :, t] * u[:, :, t, None]
        ys.append((h * C[:, None, :, t]).sum(-1) + D * u[:, :, t])
    return torch.stack(ys, dim=-1) * F.silu(z)


@pytest.mark.parametrize("chunk", [1, 3, 8, 64])
def test_scan_equals_the_naive_recurrence(chunk):
    g = torch.Generator().manual_seed(0)
    b, d, n, length = 2, 5, 4, 11
    u, delta, z = (torch.randn(b, d, length, generator=g, dtype=torch.float64) for _ in range(3))
    A = -torch.rand(d, n, generator=g, dtype=torch.float64) * 3 - 0.1
    B, C = (torch.randn(b, n, length, generator=g, dtype=torch.float64) for _ in range(2))
    D, bias = torch.randn(d, generator=g, dtype=torch.float64), torch.randn(d, generator=g, dtype=torch.float64)
    expected = naive_scan(u, delta, A, B, C, D, z, bias)
    got = selective_scan(u, delta, A, B, C, D, z=z, delta_bias=bias, delta_softplus=True, chunk=chunk)
    torch.testing.assert_close(got.double(), expected, rtol=1e-5, atol=1e-5)  # the scan computes in float32


def test_scan_gradients_match_the_naive_recurrence():
    g = torch.Generator().manual_seed(1)
    u = torch.randn(1, 3, 6, generator=g, dtype=torch.float64, requires_grad=True)
    delta, z = (
        torch.randn(1, 3, 6, generator=g, dtype=torch.float64),
        torch.randn(1, 3, 6, generator=g, dtype=torch.float64),
    )
    A = -torch.rand(3, 2, generator=g, dtype=torch.float64) - 0.5
    B, C = (
        torch.randn(1, 2, 6, generator=g, dtype=torch.float64),
        torch.randn(1, 2, 6, generator=g, dtype=torch.float64),
    )
    D, bias = torch.ones(3, dtype=torch.float64), torch.zeros(3, dtype=torch.float64)
    (grad_naive,) = torch.autograd.grad(naive_scan(u, delta, A, B, C, D, z, bias).sum(), u)
    (grad_scan,) = torch.autograd.grad(selective_scan(u, delta, A, B, C, D, z, bias, True, chunk=4).sum(), u)
    torch.testing.assert_close(grad_scan.double(), grad_naive, rtol=1e-4, atol=1e-5)


def test_ssm_block_follows_the_mamba_init_and_a_zeroed_gate_outputs_zero():
    torch.manual_seed(0)
    block = SelectiveSSM(d_model=6, d_state=4, dt_rank=3)
    # mamba_simple.py: A = -(1..d_state) per channel, D = 1, softplus(dt bias) in [1e-3, 0.1]
    torch.testing.assert_close(-torch.exp(block.A_log)[0], -torch.arange(1.0, 5.0))
    assert torch.equal(block.D.data, torch.ones(6))
    dt = F.softplus(block.dt_proj.bias)
    assert (dt >= 1e-3 - 1e-7).all() and (dt <= 0.1 + 1e-7).all()
    y, z, (dt_in, B, C) = block(torch.randn(2, 5, 6))
    assert (
        y.shape == (2, 5, 6) and z.shape == (2, 6, 5) and dt_in.shape == (2, 3, 5) and B.shape == C.shape == (2, 4, 5)
    )
    block.zero_gate()  # MambaNeck.init_weights zeroes the z rows of the new branch's in_proj
    y, z, _ = block(torch.randn(2, 5, 6))
    assert torch.count_nonzero(z) == 0 and torch.count_nonzero(y) == 0


def _neck():
    shape = NeckShape(in_dim=8, pooled_dim=8, out_dim=8, height=2, width=3, mid=16, d_state=4, dt_rank=4, expand=1,
                      num_layers=2, num_layers_new=2, use_residual_proj=False, chunk=8)  # fmt: skip
    return DualSelectiveNeck(shape)


def test_a_fresh_incremental_branch_changes_nothing_and_its_suppression_loss_is_zero():
    torch.manual_seed(0)
    neck = _neck()
    tokens, pooled = torch.randn(4, 6, 8), torch.randn(4, 8)
    before = neck(tokens, pooled).out
    neck.add_new_branch()
    out = neck(tokens, pooled)
    torch.testing.assert_close(out.out, before)
    is_base = torch.tensor([True, True, False, False])
    assert float(losses.suppression_loss(out.main.detach(), is_base, 100.0, 0.0)) == 0.0


def test_suppression_loss_is_zero_when_base_samples_leave_the_gate_closed():
    # classifier.py: w_supp * ||z[base]|| / numel(z[base]) - w_supp_novel * ||z[novel]|| / numel(z[novel])
    z = torch.zeros(4, 3, 2)
    z[2:] = torch.randn(2, 3, 2)  # only novel-class samples open the gate
    is_base = torch.tensor([True, True, False, False])
    assert float(losses.suppression_loss(z, is_base, 100.0, 0.0)) == 0.0
    z[0, 0, 0] = 3.0
    z[1, 2, 1] = 4.0
    assert float(losses.suppression_loss(z, is_base, 100.0, 0.0)) == pytest.approx(100.0 * 5.0 / 12)
    novel_norm = float(torch.linalg.vector_norm(z[2:]))
    assert float(losses.suppression_loss(z, is_base, 100.0, 1e-5)) == pytest.approx(
        100.0 * 5 / 12 - 1e-5 * novel_norm / 12
    )


def test_separation_loss_is_half_the_absolute_cosine_of_the_group_means():
    # classifier.py calculate_sep_loss: mean(|I - S|) of the 2x2 cosine matrix = |cos| / 2
    param = torch.tensor([[[1.0, 1.0], [0.0, 0.0]], [[0.0, 0.0], [2.0, 2.0]], [[1.0, 1.0], [1.0, 1.0]]])
    is_base = torch.tensor([True, False, False])
    novel_mean = torch.tensor([0.5, 1.5])
    cos = float(novel_mean[0] / novel_mean.norm())
    assert float(losses.separation_loss(param, is_base)) == pytest.approx(abs(cos) / 2)


def test_etf_is_a_simplex_and_the_dr_loss_balances_classes():
    etf = losses.etf_classifier(12, 5, torch.Generator().manual_seed(0))
    gram = etf.t() @ etf  # ETFHead: unit columns, pairwise cosine -1/(K-1)
    torch.testing.assert_close(gram.diagonal(), torch.ones(5))
    off = gram[~torch.eye(5, dtype=torch.bool)]
    torch.testing.assert_close(off, torch.full_like(off, -1 / 4), atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="at least 20 feature dims"):
        losses.etf_classifier(8, 20, torch.Generator())
    labels = torch.tensor([0, 0, 0, 1])
    rect = losses.length_rect(labels)  # gamma = 4 / 2 classes; r_c = sqrt(gamma / count_c)
    torch.testing.assert_close(rect, torch.tensor([math.sqrt(2 / 3)] * 3 + [math.sqrt(2)]))
    feats = torch.randn(4, 12)
    dot = (F.normalize(feats, dim=-1) * etf[:, labels].t()).sum(-1)
    expected = 10 * 0.5 * ((dot * rect - rect) ** 2).mean()  # DRLoss with m_norm2 = |r w_y| = r, h_norm2 = 1
    torch.testing.assert_close(losses.dr_loss(feats, labels, etf, True, 10.0), expected)
    torch.testing.assert_close(losses.dr_loss(etf[:, labels].t() * 3, labels, etf, False, 10.0), torch.tensor(0.0))


def test_session_schedule_is_the_official_cosine_cooldown():
    # fscil.py: CosineAnnealingCooldown(min_lr_ratio=1e-2, cool_down_ratio=0.1, cool_down_time=5, linear warmup 5 @ 0.1)
    total = 200
    cos1 = 0.01 + 0.5 * 0.99 * (math.cos(math.pi * 1 / 195) + 1)
    assert schedule.lr_factor(1, total) == pytest.approx(cos1 * (1 - 0.8 * 0.9))
    assert schedule.lr_factor(5, total) == pytest.approx(0.01 + 0.5 * 0.99 * (math.cos(math.pi * 5 / 195) + 1))
    assert schedule.lr_factor(195, total) == pytest.approx(0.01)
    assert schedule.lr_factor(196, total) == schedule.lr_factor(200, total) == pytest.approx(1e-3)
    p = torch.nn.Parameter(torch.ones(1))
    opt = schedule.CooldownSGD([{"params": [p], "lr": 0.25}], 0.25, total)
    p.grad = torch.ones(1)
    opt.step()
    assert float(p.detach()) == pytest.approx(1 - 0.25 * schedule.lr_factor(1, total) * (1 + 5e-4))
    assert opt.param_groups[0]["lr"] == 0.25, "the base lr is restored for the runner's scheduler"


def test_base_branch_and_backbone_are_frozen_after_the_base_session(results_root):
    cfg = config.resolve({"scenario": "fscil-tiny", "strategy": "mamba-fscil", "tiny": True},
                         {"train.max_steps": "4", "train.keep_checkpoints": "all",
                          "strategy.d_state": "8"})  # fmt: skip
    store = runner.start(cfg, results_root, out=io.StringIO(), progress=False)
    first = torch.load(store.path / "checkpoints" / "task-000.pt", weights_only=True)["strategy"]
    last = torch.load(store.path / "checkpoints" / "task-001.pt", weights_only=True)["strategy"]
    frozen = [k for k in first if k.startswith(("model.backbone.", "neck.base."))]
    assert frozen and all(torch.equal(first[k], last[k]) for k in frozen)
    new = [k for k in last if k.startswith("neck.new.")]
    assert new and not any(k in first for k in new), "the incremental branch appears with the first new session"
    assert any(not torch.equal(last[k], last[k] * 0) for k in new if "in_proj" in k), "the new branch's gate learnt"
    record, evals = results.load_run(store.path)
    assert record["status"] == "success" and record["strategy_stats"][1]["new_branch"] is True
    # the tiny CLIP tower's last block gives [CLS] + a 4 x 4 patch grid: the class token is dropped and the grid
    # pooled to feat_size 2, as the official neck reads CIFAR ResNet-12's 2 x 2 map (not a 1 x 17 sequence)
    assert record["strategy_stats"][1]["grid"] == [2, 2]
    R, _ = results.score_matrix(pd.DataFrame(evals), record["metric"], record["num_tasks"])
    assert R.shape == (3, 2)


def test_per_session_lists_repeat_their_last_entry_and_bad_knobs_are_refused():
    from cl_suite.api import Task
    from strategies.mamba_fscil.strategy import MambaFSCIL, _per_session

    # mini_imagenet eval config: step_list = (100, 110, ..., 170)
    steps = tuple(range(100, 180, 10))
    assert [_per_session(steps, Task(i, "s", None, None)) for i in (1, 8, 9)] == [100, 170, 170]
    with pytest.raises(ValueError, match="inc_steps must be >= 1"):
        MambaFSCIL(MambaFSCIL.Config(inc_steps=(0,)))
    with pytest.raises(ValueError, match="mixup_prob"):
        MambaFSCIL(MambaFSCIL.Config(mixup_prob=1.5))
