"""The 3D pyramid ViT (spatial-reduction attention, linear patch embeddings), MONAI's Dice/HD95 against known masks
and against the hand-written Dice, and organ-nifti end to end with both models under --tiny."""

from __future__ import annotations

import io
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from cl_suite import config, results, runner
from cl_suite.api import ROLES, Task
from cl_suite.dice import CaseCollector, DiceAccumulator, case_metrics, evaluate_dice
from cl_suite.models.pvt3d import PVT3D, patchify3d, unpatchify3d
from cl_suite.models.segmentation import SegmentationModel
from strategies.loco_lora import LoCoLoRA, LoCoLoRAConfig

pytest.importorskip("monai")


def _net(seed: int = 0) -> PVT3D:
    torch.manual_seed(seed)
    return PVT3D(roi=(16, 16, 16), patch=2, dims=(8, 16, 16), depths=(1, 1, 1), sr=(4, 2, 1), heads=(1, 2, 2),
                 decoder_depth=1, out_channels=4)  # fmt: skip


def test_patchify_round_trip_and_shapes():
    x = torch.randn(2, 3, 8, 4, 6)
    torch.testing.assert_close(unpatchify3d(patchify3d(x, 2), (4, 2, 3), 2), x)
    net = _net()
    assert net(torch.randn(2, 1, 16, 16, 16)).shape == (2, 4, 16, 16, 16)
    with pytest.raises(ValueError, match="sliding-window"):
        net(torch.randn(1, 1, 16, 16, 8))
    with pytest.raises(ValueError, match="divisible"):
        PVT3D(roi=(20, 16, 16), patch=2, dims=(8, 16, 16), depths=(1, 1, 1), sr=(4, 2, 1), heads=(1, 2, 2))


def test_spatial_reduction_shrinks_keys_and_values():
    net = _net()
    seen = {}
    block = net.encoder[0][0]
    block.attn.k.register_forward_hook(lambda m, i, o: seen.update(k=i[0].shape))
    block.attn.q.register_forward_hook(lambda m, i, o: seen.update(q=i[0].shape))
    net(torch.randn(1, 1, 16, 16, 16))
    assert seen["q"][1] == 8**3 and seen["k"][1] == 2**3  # stage 0: 8³ tokens, keys from (8/4)³ reduced tokens


def test_adapter_view_exposes_patch_embeddings_and_split_attention():
    net = _net()
    model = SegmentationModel(net, [[1, 2], [3]], num_organs=3, backbone_name="t", roi=(16, 16, 16))
    targets = model.linear_targets()
    assert {t.role for t in targets} == set(ROLES)
    assert all(model.get_submodule(t.name) is t.module for t in targets)
    assert [t.name for t in targets if t.role == "patch"] == ["backbone.embed.0", "backbone.embed.1",
                                                              "backbone.embed.2", "backbone.up.0", "backbone.up.1",
                                                              "backbone.out"]  # fmt: skip
    assert not any("reduce" in t.name for t in targets)  # the spatial-reduction embedding is not an adapter target
    assert len(model.blocks()) == 3 + 2


def test_loco_lora_on_the_3d_model_keeps_old_organs_and_windows_whole_volumes():
    model = SegmentationModel(_net(), [[1, 2], [3]], num_organs=3, backbone_name="t", roi=(16, 16, 16))
    strategy = LoCoLoRA(LoCoLoRAConfig(rank=2))
    strategy.setup(model, SimpleNamespace(kernel_backend="torch"))
    tasks = [Task(0, "t0", [], [], (1, 2), {"organs": ["a", "b"]}), Task(1, "t1", [], [], (3,), {"organs": ["c"]})]
    g = torch.Generator().manual_seed(1)
    batch = {"x": torch.rand(2, 1, 16, 16, 16, generator=g), "y": torch.randint(0, 4, (2, 16, 16, 16), generator=g)}
    whole = {"x": torch.rand(1, 1, 20, 16, 24, generator=g)}
    for task in tasks:
        model.on_task_start(task)
        strategy.before_task(task)
        opt = torch.optim.SGD(list(strategy.trainable_parameters()), lr=0.5)
        for _ in range(2):
            opt.zero_grad()
            strategy.training_step(batch, task).backward()
            opt.step()
        strategy.eval()
        with torch.no_grad():
            out = strategy.predict(whole, None)
        if task.index == 0:
            old = out
        strategy.train()
    assert out.shape == (1, 4, 20, 16, 24)
    torch.testing.assert_close(out[:, 1:3], old[:, 1:3])  # base organs as right after the base task
    assert any("embed" in name for name in strategy.layer_names)


def test_case_metrics_on_known_masks():
    pred, target = torch.zeros(10, 10, 10, dtype=torch.long), torch.zeros(10, 10, 10, dtype=torch.long)
    pred[2:5, 2:5, 2:5] = 1  # 27 voxels inside the 36 of the target
    target[2:6, 2:5, 2:5] = 1
    pred[0, 0, 0], target[3, 0, 0] = 2, 2  # organ 2: one voxel each, 3 voxels apart along axis 0
    dice, hd95 = case_metrics(pred, target, [1, 2, 3], spacing=(2.0, 1.0, 1.0))
    assert dice[0] == pytest.approx(2 * 27 / (27 + 36)) and dice[1] == 0 and np.isnan(dice[2])  # 3: absent
    assert hd95[1] == pytest.approx(6.0)  # 3 voxels x 2 mm; NaN where a mask is empty
    assert hd95[0] == pytest.approx(2.0) and np.isnan(hd95[2])  # the target's extra face is 1 voxel (2 mm) away
    assert case_metrics(target, target, [1])[1][0] == 0


def test_monai_dice_agrees_with_the_hand_written_accumulator():
    g = torch.Generator().manual_seed(3)
    pred = torch.randint(0, 4, (12, 8, 8), generator=g)
    target = torch.randint(0, 4, (12, 8, 8), generator=g)
    target[6:, :, :][target[6:] == 3] = 0  # case 1 lacks organ 3: left out of its mean by both
    cases = torch.tensor([0] * 6 + [1] * 6)
    acc = DiceAccumulator([1, 2, 3])
    acc.update(pred, target, cases)
    collector = CaseCollector()
    collector.update(pred, target, cases)
    monai = {1: [], 2: [], 3: []}
    for _, p, t, _ in collector.cases():
        for organ, d in zip((1, 2, 3), case_metrics(p, t, [1, 2, 3])[0]):
            if np.isfinite(d):
                monai[organ].append(d)
    for organ, value in acc.per_organ().items():
        assert np.mean(monai[organ]) == pytest.approx(value, abs=1e-6)

    task = Task(0, "t", [], [{"x": pred[i : i + 1].float(), "y": target[i], "case": cases[i]} for i in range(12)],
                (1, 2, 3), {"organs": ["a", "b", "c"]})  # fmt: skip
    ctx = SimpleNamespace(device=torch.device("cpu"), train=SimpleNamespace(eval_batch_size=5),
                          loader=lambda data, batch_size: torch.utils.data.DataLoader(data, batch_size=batch_size))
    onehot = evaluate_dice(lambda b: torch.nn.functional.one_hot(b["x"][:, 0].long(), 4).movedim(-1, 1).float(), task, ctx)
    assert onehot["dice/a"] == pytest.approx(100 * acc.per_organ()[1]) and onehot["n"] == 3
    assert "hd95/a" in onehot


@pytest.mark.parametrize("model", ["pvt3d", "slice2d"])
def test_organ_nifti_runs_end_to_end_under_tiny(tmp_path, model):
    from scenarios.organ_fixtures import write_fixture

    root = write_fixture(tmp_path / "btcv", "btcv", cases=5, size=32, slices=16)
    sets = {"scenario.root": str(root), "scenario.protocol": "btcv", "scenario.model": model, "train.max_steps": "2",
            "scenario.image_size": "32", "scenario.patch": "4", "scenario.pvt_dims": "8,16,16"}  # fmt: skip
    cfg = config.resolve({"scenario": "organ-nifti", "strategy": "loco-lora", "tiny": True}, sets)
    store = runner.start(cfg, tmp_path / "runs", out=io.StringIO(), progress=False)
    record, evals = results.load_run(store.path)
    assert record["status"] == "success" and record["metric"] == "dice"
    assert record["backbone"].startswith("seg-pvt3d(roi=32x32x32" if model == "pvt3d" else "seg-pvt2d")
    metrics = {e["metric"] for e in evals}
    assert {"dice", "dice/liver", "dice/aorta"} <= metrics
