"""The segmentation transformer, its task model, Dice, and the loco-lora strategy (unit level, tiny tensors)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cl_suite.api import ROLES, Task
from cl_suite.dice import DiceAccumulator, step_means
from cl_suite.models.segmentation import SegmentationModel, SegTransformer


def _model(seed: int = 0) -> SegmentationModel:
    torch.manual_seed(seed)
    net = SegTransformer(image_size=16, patch=4, dims=(8, 16), depths=(1, 1), decoder_depth=1, heads=2, out_channels=4)
    return SegmentationModel(net, [[1, 2], [3]], num_organs=3, backbone_name="test")


def _task(index: int, organs: tuple[int, ...]) -> Task:
    return Task(index, f"t{index}", [], [], classes=organs, meta={"organs": [f"o{o}" for o in organs]})


def _batch(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 4, (3, 16, 16), generator=g)
    return {"x": torch.rand(3, 1, 16, 16, generator=g), "y": y, "case": torch.tensor([0, 0, 1])}


def test_adapter_view_exposes_every_role_and_block():
    model = _model()
    targets = model.linear_targets()
    assert {t.role for t in targets} == set(ROLES)
    for t in targets:
        assert model.get_submodule(t.name) is t.module
    blocks = model.blocks()
    assert len(blocks) == 3 and all(b.norm is b.block.norm2 for b in blocks)


def test_patch_embedding_equals_a_strided_conv():
    net = _model().backbone
    x = torch.rand(2, 1, 16, 16)
    weight = net.patch_embed.weight.view(8, 1, 4, 4)
    conv = F.conv2d(x, weight, net.patch_embed.bias, stride=4).flatten(2).transpose(1, 2)
    ours = net.patch_embed(F.unfold(x, 4, stride=4).transpose(1, 2))
    torch.testing.assert_close(ours, conv)


def test_loss_sees_only_the_task_organs():
    model = _model()
    labels = torch.tensor([[0, 1, 2, 3]])
    assert model.local_targets(labels, 0).tolist() == [[0, 1, 2, 0]]  # organ 3 belongs to task 1: background here
    assert model.local_targets(labels, 1).tolist() == [[0, 0, 0, 1]]
    loss = model.loss(_batch(), _task(0, (1, 2)))
    loss.backward()
    assert torch.isfinite(loss)
    assert model.heads[0].weight.grad is not None and model.heads[1].weight.grad is None


def test_predict_combines_seen_heads_and_is_background_before_training():
    model = _model()
    batch = _batch()
    before = model.predict(batch, None)
    assert before.shape == (3, 4, 16, 16) and (before.argmax(1) == 0).all()
    model.on_task_start(_task(0, (1, 2)))
    model.on_task_start(_task(1, (3,)))
    out = model.predict(batch, None)
    feats = model.features(batch)
    logp0, logp1 = (model.head_logits(feats, t).log_softmax(1) for t in (0, 1))
    torch.testing.assert_close(out[:, 1:3], logp0[:, 1:])
    torch.testing.assert_close(out[:, 3], logp1[:, 1])
    torch.testing.assert_close(out[:, 0], torch.minimum(logp0[:, 0], logp1[:, 0]))


def test_dice_per_case_ignores_cases_without_the_organ():
    acc = DiceAccumulator([1, 2])
    pred = torch.tensor([[[1, 1, 0, 0]], [[2, 0, 0, 0]]])
    gt = torch.tensor([[[1, 0, 0, 0]], [[0, 0, 0, 0]]])
    acc.update(pred, gt, torch.tensor([7, 8]))
    dice = acc.per_organ()
    assert dice == pytest.approx({1: 2 * 1 / (2 + 1)})  # organ 2 is in no case: no Dice; case 8 lacks organ 1


def test_dice_sums_a_case_over_its_slices():
    acc = DiceAccumulator([1])
    pred = torch.tensor([[[1, 0]], [[0, 0]]])
    gt = torch.tensor([[[1, 0]], [[1, 0]]])
    acc.update(pred, gt, torch.tensor([3, 3]))  # one case, two slices: 3D Dice = 2*1 / (1 + 2)
    assert acc.per_organ()[1] == pytest.approx(2 / 3)


def test_step_means_old_new_all_are_organ_weighted():
    R = np.array([[0, 0, 0], [90, 0, 0], [30, 80, 0], [20, 40, 70.0]])
    steps = step_means(R, n=[4, 2, 2])
    assert np.isnan(steps[0]["old"]) and steps[0]["new"] == 90
    assert steps[1] == pytest.approx({"old": 30, "new": 80, "all": (30 * 4 + 80 * 2) / 6})
    assert steps[2] == pytest.approx({"old": (20 * 4 + 40 * 2) / 6, "new": 70, "all": (80 + 80 + 140) / 8})


def test_model_rejects_bad_organ_ids():
    net = SegTransformer(image_size=16, patch=4, dims=(8, 16), depths=(1, 1), heads=2, out_channels=4)
    with pytest.raises(ValueError, match="organ ids"):
        SegmentationModel(net, [[0, 1]], num_organs=2, backbone_name="x")
    with pytest.raises(ValueError, match="divisible"):
        SegTransformer(image_size=18, patch=4)


def test_a_mixed_batch_trains_each_sample_on_its_own_head():
    model = _model()
    batch = _batch() | {"task": torch.tensor([0, 1, 1])}
    mixed = model.loss(batch, _task(1, (3,)))
    feats = model.features(batch)
    parts = [model.loss_from_logits(model.head_logits(feats[rows], t), batch["y"][rows], t)
             for t, rows in ((0, torch.tensor([True, False, False])), (1, torch.tensor([False, True, True])))]
    torch.testing.assert_close(mixed, parts[0] / 3 + parts[1] * 2 / 3)
    mixed.backward()
    assert model.heads[0].weight.grad is not None and model.heads[1].weight.grad is not None
