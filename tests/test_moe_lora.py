"""lora-switch, smora, milora: each method's defining property on a tiny Llama, the external gate mode of
AdapterLinear, and the continual framing (experts added per task, earlier ones frozen)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from cl_suite.adapters import AdapterLinear
from cl_suite.adapters.routing import RankRouter, fit_gate, load_balance_loss
from cl_suite.config import TrainConfig
from cl_suite.models import llm_backbones
from cl_suite.models.llm import LLMTaskModel
from strategies.lora_switch import LoRASwitch, LoRASwitchConfig
from strategies.milora import MiLoRA, MiLoRAConfig
from strategies.smora import SMoRA, SMoRAConfig

CTX = SimpleNamespace(kernel_backend="torch", setting="instr", train=TrainConfig(lr=1e-3))


def _model(seed: int = 0) -> LLMTaskModel:
    torch.manual_seed(seed)
    loaded = llm_backbones.tiny_llama()
    return LLMTaskModel(loaded.model, loaded.tokenizer, loaded.name)


def _trained_looking(strategy) -> None:
    """Random B (a fresh B is zero, so every expert would contribute nothing)."""
    with torch.no_grad():
        for layer in strategy.layers.values():
            for g in layer.groups:
                g.B.normal_(std=0.5)


def _setup(cls, config, seed: int = 0):
    model = _model(seed)
    strategy = cls(config)
    strategy.setup(model, CTX)
    strategy.before_task(SimpleNamespace(index=0))
    _trained_looking(strategy)
    return strategy, model


# -- the external gate mode -------------------------------------------------------------------------------------
def test_external_gate_is_scaled_and_a_single_row_computes_only_its_nonzero_ranks():
    torch.manual_seed(0)
    layer = AdapterLinear(nn.Linear(6, 5), gate="external")
    layer.add_group(2, alpha=4.0)  # scale 2
    layer.add_group(3, alpha=3.0)  # scale 1
    for g in layer.groups:
        nn.init.normal_(g.B)
    gate = torch.tensor([0.0, 0.5, 0.0, 0.0, 2.0])
    layer.gate_source = lambda x: gate
    x = torch.randn(1, 1, 6)
    A, B = torch.cat([g.A for g in layer.groups], 1), torch.cat([g.B for g in layer.groups], 0)
    expected = layer.base(x) + ((x @ A) * gate * torch.tensor([2.0, 2.0, 1.0, 1.0, 1.0])) @ B
    torch.testing.assert_close(layer(x), expected)
    layer.gate_source = lambda x: torch.zeros(5)  # nothing chosen: the bare linear
    torch.testing.assert_close(layer(x), layer.base(x))


def test_fit_gate_layouts():
    x = torch.randn(2, 3, 4)
    assert fit_gate(torch.ones(2, 3, 5), x).shape == (2, 3, 5)
    assert fit_gate(torch.ones(2, 5), x).shape == (2, 5)
    per_sample = torch.arange(10.0).view(2, 5)
    flat = fit_gate(per_sample, x.reshape(6, 4))
    assert flat.shape == (6, 5) and torch.equal(flat[3], per_sample[1])
    with pytest.raises(ValueError, match="does not fit"):
        fit_gate(torch.ones(4, 5), x)


# -- LoRA-Switch ----------------------------------------------------------------------------------------------
def _record_gates(layers: dict[str, AdapterLinear]) -> dict[str, list[torch.Tensor]]:
    seen: dict[str, list[torch.Tensor]] = {n: [] for n in layers}
    for name, layer in layers.items():
        source = layer.gate_source

        def spy(x, source=source, name=name):
            gate = source(x)
            seen[name].append(gate.detach().clone())
            return gate

        layer.gate_source = spy
    return seen


def test_lora_switch_routes_each_token_once_and_every_layer_uses_that_choice():
    s, model = _setup(LoRASwitch, LoRASwitchConfig(experts_per_task=4, rank=2))
    seen = _record_gates(s.layers)
    ids = torch.randint(3, 200, (2, 7))
    with torch.no_grad():
        model.lm(input_ids=ids)
    experts = {}
    for name in s.layers:
        (gate,) = seen[name]
        per_expert = gate.view(2, 7, 4, 2)[..., 0]  # rank 2: both ranks of an expert carry its weight
        experts[name] = per_expert != 0
        assert (experts[name].sum(-1) == 2).all()  # top-2 per token
    first = next(iter(experts.values()))
    assert first.any(-1).all() and len({tuple(m.flatten().tolist()) for m in experts.values()}) == 1
    # two different tokens usually choose differently: the choice is per token, not per sequence
    assert len({tuple(row.tolist()) for row in first.reshape(-1, 4)}) > 1


def test_lora_switch_merging_the_chosen_experts_equals_the_unmerged_mixture():
    s, model = _setup(LoRASwitch, LoRASwitchConfig(experts_per_task=4, rank=2))
    ids = torch.randint(3, 200, (1, 1))  # one token at batch 1: the case LoRA-Switch merges
    model.eval()
    before = {n: layer.base.weight.clone() for n, layer in s.layers.items()}
    with torch.no_grad():
        unmerged = model.lm(input_ids=ids).logits
        s.binding.merge = True
        merged = model.lm(input_ids=ids).logits
        assert any(not torch.equal(layer.base.weight, before[n]) for n, layer in s.layers.items())  # W switched
        s.binding.merge = False
    torch.testing.assert_close(merged, unmerged, rtol=1e-5, atol=1e-5)
    s.binding.unmerge()
    assert all(torch.equal(layer.base.weight, before[n]) for n, layer in s.layers.items())  # restored exactly


def test_lora_switch_grows_experts_per_task_and_freezes_the_earlier_ones():
    s, _ = _setup(LoRASwitch, LoRASwitchConfig(experts_per_task=3, rank=2))
    s.after_task(SimpleNamespace(index=0))
    s.before_task(SimpleNamespace(index=1))
    layer = next(iter(s.layers.values()))
    assert len(layer.groups) == 6 and [g.frozen for g in layer.groups] == [True] * 3 + [False] * 3
    gate = s.binding.gates[0]
    assert gate.router.outputs == 6 and [p.weight.requires_grad for p in gate.router.parts] == [False, True]
    trainable = {id(p) for p in s.trainable_parameters()}
    assert id(gate.router.parts[1].weight) in trainable and id(gate.router.parts[0].weight) not in trainable


# -- SMoRA ----------------------------------------------------------------------------------------------------
def test_smora_activates_exactly_k_ranks_per_token():
    s, model = _setup(SMoRA, SMoRAConfig(rank=6, topk=3))
    seen = _record_gates(s.layers)
    with torch.no_grad():
        model.lm(input_ids=torch.randint(3, 200, (2, 5)))
    for gates in seen.values():
        (gate,) = gates
        assert ((gate != 0).sum(-1) == 3).all()
        torch.testing.assert_close(gate.sum(-1), torch.full(gate.shape[:-1], 3.0))  # g = k · p / Σ p (official)


def test_smora_defaults_are_the_official_ones():
    # StyxXuan/smora @ 8bdabcd: SRMoLEConfig.activate_r = 8; SRMoLELinear(bias_update_rate=1e-5, rank_partition=1);
    # README example: r=16, lora_alpha=32, target_modules ["q_proj", "v_proj"]
    c = SMoRAConfig()
    assert (c.topk, c.update_rate, c.rank, c.alpha, c.targets) == (8, 1e-5, 16, 32.0, ("q", "v"))


def test_smora_router_and_bias_follow_the_official_rule():
    # SRMoLELinear.forward (StyxXuan/smora @ 8bdabcd): sigmoid(router(x)) + biases, topk(activate_r),
    # gate = topk / sum * activate_r; in training biases += bias_update_rate * sign(mean(counts) - counts)
    torch.manual_seed(0)
    router = RankRouter(4, topk=2, update_rate=0.1)
    router.grow(4)
    x = torch.randn(5, 4)
    scores = torch.sigmoid(x @ router.router.parts[0].weight.t())
    top, idx = scores.topk(2, -1)
    expected = torch.zeros_like(scores).scatter(-1, idx, top / top.sum(-1, keepdim=True) * 2)
    router.eval()
    torch.testing.assert_close(router(x), expected)
    router.train()
    router(x)
    counts = torch.bincount(idx.reshape(-1), minlength=4).float()
    torch.testing.assert_close(router.bias, 0.1 * (counts.mean() - counts).sign())  # b += u·sign(mean - count)


def test_smora_trains_only_the_router_and_the_current_tasks_ranks():
    s, model = _setup(SMoRA, SMoRAConfig(rank=4, topk=2))
    s.after_task(SimpleNamespace(index=0))
    s.before_task(SimpleNamespace(index=1))
    expected = set()
    for layer in s.layers.values():
        router = layer.routers[0]
        assert layer.rank == 8 and router.router.outputs == 8 and router.bias.numel() == 8
        assert router.trainable_from == 4
        expected |= {id(layer.groups[1].A), id(layer.groups[1].B), id(router.router.parts[1].weight)}
    assert {id(p) for p in s.trainable_parameters()} == expected
    batch = {"prompt": ["abc", "de"], "answer": ["x", "yz"]}
    model.train()
    s.training_step(batch, SimpleNamespace(index=1)).backward()
    got = {id(p) for p in model.parameters() if p.grad is not None}
    assert got and got <= expected  # gradient reaches nothing else
    for layer in s.layers.values():
        assert torch.all(layer.routers[0].bias[:4] == 0)  # frozen task's balancing biases untouched (bias_update=current)


# -- MiLoRA ---------------------------------------------------------------------------------------------------
def test_milora_routing_of_generated_tokens_equals_the_routing_at_the_prompt():
    s, model = _setup(MiLoRA, MiLoRAConfig(rank=4, topk=2))
    model.eval()
    s.binding.history = []
    model.predict({"prompt": ["hello there", "abc"], "max_new_tokens": 5}, None)
    steps = s.binding.history
    assert len(steps) >= 2  # the prompt forward, then decode steps
    prompt = steps[0]
    assert len(prompt) == len(s.binding.blocks)
    for step in steps[1:]:
        for at_prompt, now in zip(prompt, step):
            assert torch.equal(at_prompt, now)
    for gate in prompt:  # top-k of the block's modules per prompt
        assert ((gate != 0).sum(-1) == 2).all()


def test_milora_recomputes_for_a_new_prompt_and_pools_only_the_prompt():
    s, model = _setup(MiLoRA, MiLoRAConfig(rank=4, topk=2))
    model.eval()
    s.binding.history = []
    with torch.no_grad():
        a = model.lm(input_ids=torch.randint(3, 200, (1, 6)))
        model.lm(input_ids=torch.randint(3, 200, (1, 6)))
    del a
    assert len(s.binding.history) == 2
    # training: answer positions (label != -100) are not part of the prompt the router pools
    model.train()
    enc = model.encode_train(["abc"], ["xyz"])
    with torch.no_grad():
        model.lm(**enc)
    assert s.binding.prompt_mask is not None
    assert s.binding.prompt_mask.sum() == (enc["labels"] == -100).logical_and(enc["attention_mask"].bool()).sum()


def test_milora_load_balance_loss_and_its_weight():
    probs = torch.tensor([[0.7, 0.2, 0.1], [0.6, 0.3, 0.1]])
    # f = (1, 0, 0), p̂ = (0.65, 0.25, 0.1): 3 · 0.65
    torch.testing.assert_close(load_balance_loss(probs), torch.tensor(3 * 0.65))
    s, model = _setup(MiLoRA, MiLoRAConfig(rank=4, topk=2))
    model.train()
    batch = {"prompt": ["abc"], "answer": ["x"]}
    torch.manual_seed(1)
    with_lb = s.training_step(batch, SimpleNamespace(index=0))
    plain = model.loss(batch, SimpleNamespace(index=0))
    torch.testing.assert_close(with_lb - plain, 1e-2 * s.binding.balance_loss(), rtol=1e-4, atol=1e-6)


def test_milora_grows_module_experts_per_task():
    s, _ = _setup(MiLoRA, MiLoRAConfig(rank=4, topk=3))
    m = s.binding.modules_per_block
    assert m == 7  # q, k, v, o, gate, up, down on Llama
    s.after_task(SimpleNamespace(index=0))
    s.before_task(SimpleNamespace(index=1))
    router = s.binding.routers[0]
    assert router.router.outputs == 2 * m
    assert not router.pooler.score.weight.requires_grad  # the pooler trains on the first task only
    assert [p.weight.requires_grad for p in router.router.parts] == [False, True]


# -- cl-suite bench decode ------------------------------------------------------------------------------------------
def test_bench_decode_variants_compute_what_they_claim():
    from cl_suite.adapters import bench_decode

    model = bench_decode.load_model("tiny", torch.device("cpu"))
    torch.manual_seed(0)
    variants = {v.name: v for v in bench_decode.build_variants(model, std=0.5)}
    ids = torch.randint(3, 200, (1, 5))
    logits = {}
    for name in ("base", "lora-merged", "lora-unmerged", "lora-switch", "lora-switch-merge"):
        v = variants[name]
        bench_decode._swap(model, v.modules)
        v.attach()
        with torch.no_grad():
            logits[name] = model.lm(input_ids=ids[:, :1]).logits
        v.detach()
        bench_decode._swap(model, variants["base"].modules)
    torch.testing.assert_close(logits["lora-merged"], logits["lora-unmerged"], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(logits["lora-switch-merge"], logits["lora-switch"], rtol=1e-4, atol=1e-4)
    assert not torch.allclose(logits["base"], logits["lora-unmerged"])
    assert all(type(t.module) is nn.Linear for t in model.linear_targets())  # every swap undone


def test_bench_decode_cli_prints_the_table_and_a_verdict_per_dynamic_method(tmp_path, capsys):
    from cl_suite import cli
    from cl_suite.adapters.bench_decode import DYNAMIC

    csv_path = tmp_path / "decode.csv"
    assert cli.main(["bench", "decode", "--model", "tiny", "--new-tokens", "2", "--prompt-tokens", "3", "--reps", "1",
                     "--csv", str(csv_path)]) == 0  # fmt: skip
    out = capsys.readouterr().out
    for name in DYNAMIC:
        assert f"{name}: " in out and ("target met" in out or "NOT met" in out)
    assert "naive-loop (contrast" in out
    assert len(csv_path.read_text().strip().splitlines()) == 1 + 11
    assert cli.main(["bench", "decode", "--model", "tiny", "--new-tokens", "0"]) == 2


def test_factor_cache_follows_every_change_of_the_bank():
    torch.manual_seed(0)
    layer = AdapterLinear(nn.Linear(4, 3), gate="none")
    layer.add_group(2)
    layer.add_group(2)
    x = torch.randn(2, 4)

    def fresh():
        A, B = torch.cat([g.A for g in layer.groups], 1), torch.cat([g.B for g in layer.groups], 0)
        return layer.base(x) + x @ A @ B

    with torch.no_grad():
        layer(x)
        layer.groups[1].B.add_(1.0)  # in place (an optimizer step)
        torch.testing.assert_close(layer(x), fresh())
        layer.groups[0].B.copy_(torch.randn(2, 3))  # a checkpoint load
        torch.testing.assert_close(layer(x), fresh())
        layer.add_group(1)
        layer.groups[-1].B.normal_()
        torch.testing.assert_close(layer(x), fresh())
        layer.prune_ranks(0, torch.tensor([True, False]))
        torch.testing.assert_close(layer(x), fresh())


def test_a_single_row_gate_follows_in_place_updates_of_a_single_group():
    torch.manual_seed(0)
    layer = AdapterLinear(nn.Linear(4, 3), gate="external")
    layer.add_group(4)
    nn.init.normal_(layer.groups[0].B)
    layer.gate_source = lambda x: torch.tensor([1.0, 0.0, 2.0, 0.0])
    x = torch.randn(1, 4)
    g = layer.groups[0]
    by_hand = lambda: layer.base(x) + (x @ g.A * torch.tensor([1.0, 0.0, 2.0, 0.0])) @ g.B  # noqa: E731
    with torch.no_grad():
        torch.testing.assert_close(layer(x), by_hand())
        g.A.add_(1.0)  # an optimizer step between two decodes
        torch.testing.assert_close(layer(x), by_hand())
