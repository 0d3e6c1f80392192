"""CLIP task model, tiny CLIP, clip-tiny scenarios and the full-scale loaders (on fake folders made here)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import cl_suite  # noqa: F401  (torchvision fix before open_clip)
from cl_suite import config, runner
from cl_suite.models import tiny_clip
from cl_suite.models.clip import CLIPTaskModel, PatchLinear, SplitAttention, split_fused_layers
from cl_suite.results import load_run, score_matrix


@pytest.fixture(scope="module")
def random_clip_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("clip") / "tiny_clip.pt"
    tiny_clip.save(tiny_clip.build(seed=3), path)
    return path


def _inputs():
    torch.manual_seed(0)
    return torch.randn(3, 3, 32, 32), tiny_clip.tokenizer()(["a photo of a red circle.", "the digit 3", "a face"])


def test_split_layers_equal_the_fused_originals():
    clip = tiny_clip.build(seed=1).eval()
    images, tokens = _inputs()
    with torch.no_grad():
        before = clip.encode_image(images), clip.encode_text(tokens)
        split = split_fused_layers(copy.deepcopy(clip))
        after = split.encode_image(images), split.encode_text(tokens)
    assert not any(isinstance(m, torch.nn.MultiheadAttention) for m in split.modules())
    assert isinstance(split.visual.conv1, PatchLinear)
    for a, b in zip(before, after):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def _model(clip=None):
    clip = clip or tiny_clip.build(seed=1)
    names, templates = ["circle", "square", "0", "1"], [("a photo of a {}.",)] * 2 + [("the digit {}",)] * 2
    return CLIPTaskModel(clip, tiny_clip.tokenizer(), names, templates, [(0, 1), (2, 3)], "tiny-clip")


def test_adapter_roles_and_blocks_cover_both_towers():
    model = _model()
    targets = model.linear_targets()
    roles = {t.role for t in targets}
    assert roles == {"q", "k", "v", "o", "fc1", "fc2", "patch"}
    for t in targets:
        assert model.get_submodule(t.name) is t.module and isinstance(t.module, torch.nn.Linear)
    layers = tiny_clip.CONFIG["vision_cfg"]["layers"] + tiny_clip.CONFIG["text_cfg"]["layers"]
    assert sum(t.role == "q" for t in targets) == layers
    assert any(t.name.startswith("clip.visual.") for t in targets) and any(t.name.startswith("clip.transformer.") for t in targets)
    blocks = model.blocks()
    assert len(blocks) == layers
    assert all(isinstance(b.attn, SplitAttention) and b.norm is b.block.ln_2 for b in blocks)


def test_predict_masks_classes_and_loss_trains_text_and_image(random_clip_path):
    model = _model(tiny_clip.load(random_clip_path, verify=False))
    images, _ = _inputs()
    batch = {"x": images, "y": torch.tensor([2, 3, 2])}
    scores = model.predict(batch, task_id=1)
    assert (scores[:, :2] == torch.finfo(scores.dtype).min).all() and torch.isfinite(scores[:, 2:]).all()
    assert torch.isfinite(model.predict(batch, None)).all()  # eval_classes="all": every class scored
    assert model.logits(batch).shape == (3, 4) and model.features(batch).shape == (3, tiny_clip.CONFIG["embed_dim"])
    model.train()
    task = type("T", (), {"classes": (2, 3), "name": "digits"})()
    model.text_loss = 0.5
    model.loss(batch, task).backward()
    assert model.clip.token_embedding.weight.grad.abs().sum() > 0
    assert model.clip.visual.conv1.proj.weight.grad.abs().sum() > 0


def test_tiny_clip_digest_depends_on_the_weights_not_the_file_name(tmp_path):
    model = tiny_clip.build(seed=1)
    assert tiny_clip.save(model, tmp_path / "a.pt") == tiny_clip.save(model, tmp_path / "other_name.pt")


def test_tiny_clip_weights_match_their_sha256():
    assert tiny_clip.WEIGHTS.stat().st_size <= 16 * 2**20
    expected = tiny_clip.WEIGHTS.with_name("tiny_clip.pt.sha256").read_text().split()[0]
    assert tiny_clip.sha256(tiny_clip.WEIGHTS) == expected
    tiny_clip.load()  # loads and verifies


def _run(tmp_path, scenario, strategy, **sets):
    overrides = {"scenario.name": scenario, "strategy.name": strategy, "tiny": "true", "device": "cpu", **sets}
    store = runner.start(config.resolve({}, overrides), tmp_path, progress=False)
    record, evals = load_run(store.path)
    import pandas as pd

    R, _ = score_matrix(pd.DataFrame(evals), "acc", record["num_tasks"])
    return record, R


def _direct_zero_shot(scenario_name: str) -> list[float]:
    """Zero-shot accuracy computed here from the raw CLIP: prompt ensembles, cosine similarity, argmax."""
    from cl_suite import registry

    scenario = registry.load("scenario", scenario_name)(tiny=True)
    tasks = scenario.tasks()
    clip, tok = tiny_clip.load(), tiny_clip.tokenizer()
    all_classes = [(t, j) for t in tasks for j in range(len(t.meta["class_names"]))]
    with torch.no_grad():
        text = torch.stack([
            F.normalize(F.normalize(clip.encode_text(tok([p.format(t.meta["class_names"][j]) for p in t.meta["templates"]])), dim=-1).mean(0), dim=-1)
            for t, j in all_classes
        ])  # fmt: skip
        accs = []
        for t in tasks:
            x = torch.stack([t.test[i]["x"] for i in range(len(t.test))])
            y = torch.tensor([t.test[i]["y"] for i in range(len(t.test))])
            sims = F.normalize(clip.encode_image(x), dim=-1) @ text.T
            if scenario.setting == "til":
                allowed = torch.full_like(sims, float("-inf"))
                allowed[:, list(t.classes)] = 0
                sims = sims + allowed
            accs.append(100.0 * float((sims.argmax(1) == y).float().mean()))
    return accs


@pytest.mark.parametrize("scenario", ["clip-tiny", "clip-tiny-xtail"])
def test_zero_shot_row_equals_the_models_zero_shot_accuracy(tmp_path, scenario):
    record, R = _run(tmp_path, scenario, "zero-shot")
    assert record["status"] == "success"
    np.testing.assert_allclose(R[0], _direct_zero_shot(scenario), atol=1e-6)
    np.testing.assert_allclose(R[1:], np.broadcast_to(R[0], R[1:].shape))
    assert set(record["summary"]) >= {"mtil_transfer", "mtil_avg", "mtil_last"}


def test_finetune_on_clip_tiny_forgets_and_loses_transfer(tmp_path):
    """On the full stream (not --tiny: with two domains, training on digits happens to raise the shapes score),
    finetune forgets learnt domains and its MTIL Transfer falls below the zero-shot model's score on the same
    not-yet-learnt domains (row 0 of the same run)."""
    record, R = _run(tmp_path, "clip-tiny", "finetune", tiny="false")
    assert R.shape == (5, 4)
    assert record["summary"]["forgetting"] > 5
    zero_shot_transfer = R[0, 1:].mean()  # what Transfer would be if training never hurt unseen domains
    assert record["summary"]["mtil_transfer"] < zero_shot_transfer - 2


def test_text_cache_is_not_reused_when_gradients_flow():
    """An importance pass (EWC, SI) runs eval mode with gradients: two backward passes must both work."""
    from cl_suite import registry
    from cl_suite.api import Context
    from cl_suite.config import TrainConfig

    scenario = registry.load("scenario", "clip-tiny")(tiny=True)
    task = scenario.tasks()[0]
    ctx = Context(torch.device("cpu"), torch.float32, 0, 1, "til", TrainConfig(), make_loader=None)
    model = scenario.build_model(ctx)
    model.on_task_start(task)
    model.eval()
    batch = {"x": torch.stack([task.train[i]["x"] for i in range(4)]),
             "y": torch.tensor([task.train[i]["y"] for i in range(4)])}  # fmt: skip
    for _ in range(2):
        model.loss(batch, task).backward()
    with torch.no_grad():
        first = model.text_features(task.classes)
        assert model.text_features(task.classes) is first  # cached under no_grad


def test_a_batch_mixing_tasks_scores_each_sample_within_its_own_task():
    """Joint training and replay mix domains in one batch: the loss is the sample-weighted mean of the per-task
    losses (MTIL scores a sample within its own domain's classes), label smoothing included."""
    from cl_suite import registry
    from cl_suite.api import Context
    from cl_suite.config import TrainConfig

    scenario = registry.load("scenario", "clip-tiny")(tiny=True)
    tasks = scenario.tasks()
    model = scenario.build_model(Context(torch.device("cpu"), torch.float32, 0, 2, "til", TrainConfig(), None))
    model.label_smoothing = 0.2
    for task in tasks:
        model.on_task_start(task)
    parts = [{"x": torch.stack([t.train[i]["x"] for i in range(n)]),
              "y": torch.tensor([t.train[i]["y"] for i in range(n)])} for t, n in zip(tasks, (3, 2))]  # fmt: skip
    mixed = {k: torch.cat([p[k] for p in parts]) for k in ("x", "y")}
    with torch.no_grad():
        expected = (3 * model.loss(parts[0], tasks[0]) + 2 * model.loss(parts[1], tasks[1])) / 5
        assert torch.isclose(model.loss(mixed, tasks[1]), expected, rtol=1e-5)


def test_official_text_to_image_term_is_codyra_and_morams():
    """Issue #19. CoDyRA's and MoRAM's ``train_model`` (Artificer-AI-Lab/CoDyRA models/codyra.py @ c1691e4,
    Artificer-AI-Lab/MoRAM XTAIL/models/moram.py @ 05c3d61) compute, over the text set of every seen class
    (earlier tasks' classes first): ``mask = (labels == arange(C)).T``, ``t_logits = scale · E_text @ f_imgᵀ`` and
    ``F.cross_entropy(t_logits, mask)`` with the raw multi-hot mask as probability targets. The reference below
    evaluates exactly that expression; the earlier tasks' rows (no image matches them) are arbitrary numbers."""
    model = _model()
    model.seen[:] = True  # task 2 of 2: classes 0, 1 (task 1) and 2, 3 (current)
    g = torch.Generator().manual_seed(0)
    t2i = torch.randn(2, 5, generator=g) * 3  # current classes 2, 3 scored against 5 images
    target = torch.tensor([0, 0, 1, 0, 1])  # within-task targets: images of class 2, 2, 3, 2, 3
    earlier_rows = torch.randn(2, 5, generator=g)
    labels = target + 2
    mask = (labels[:, None] == torch.arange(4)[None, :]).float().T
    official = torch.nn.functional.cross_entropy(torch.cat([earlier_rows, t2i]), mask)
    torch.testing.assert_close(model._text_to_image_loss(t2i, target), official, rtol=0, atol=1e-6)

    model.text_loss_form = "present-mean"  # rows normalised by their matches, mean over the classes present
    want = -(t2i.log_softmax(1)[0, [0, 1, 3]].mean() + t2i.log_softmax(1)[1, [2, 4]].mean()) / 2
    torch.testing.assert_close(model._text_to_image_loss(t2i, target), want, rtol=0, atol=1e-6)


def test_codyra_and_moram_turn_the_official_text_term_on_for_clip_scenarios_only():
    cfg = config.resolve({}, {"scenario.name": "clip-tiny", "strategy.name": "rank-selective-lora"})
    assert (cfg.scenario_config.text_loss, cfg.scenario_config.text_loss_form) == (1.0, "official")
    assert config.resolve({}, {"scenario.name": "clip-tiny", "strategy.name": "mora"}).scenario_config.text_loss == 1.0
    user = {"scenario.name": "clip-tiny", "strategy.name": "mora", "scenario.text_loss": "0"}
    assert config.resolve({}, user).scenario_config.text_loss == 0.0  # the user's value wins
    assert config.resolve({}, {"scenario.name": "clip-tiny", "strategy.name": "lora"}).scenario_config.text_loss == 0.0
    config.resolve({}, {"scenario.name": "digits-tiny", "strategy.name": "rank-selective-lora"})  # no such key: ignored
