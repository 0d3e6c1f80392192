"""The instruction TaskModel around a transformers causal LM: answer-only loss, batched greedy generation.

Batches are text: ``{"prompt": [str], "answer": [str], "max_new_tokens": int}`` (the scenario's collate). The model
formats each prompt as ``prompt_format`` says: ``raw`` (BOS, then the text as given: O-LoRA's and TRACE's input),
``chat`` (the tokenizer's chat template: one user turn, then the assistant header), ``plain`` (a ``### Instruction /
### Response`` layout), or ``auto`` (chat when the tokenizer has a template, else plain); the answer follows, closed
by the EOS token. The loss is
the mean cross-entropy over the answer tokens only (prompt and padding labels are -100), as TRACE's and O-LoRA's
supervised fine-tuning do. ``predict`` left-pads the prompts and decodes greedily; it returns the new token ids
(B, L), padded with the pad id after EOS, and ``decode`` turns them into text for the scenario's metrics.

Adapter view: Llama-family models (Llama, SmolLM, Mistral, Qwen2: ``model.layers`` with ``q/k/v/o_proj`` and
``gate/up/down_proj``) and GPT-2 (``transformer.h``). GPT-2's fused ``c_attn`` Conv1D is split into three
``nn.Linear`` (q, k, v) whose outputs are concatenated, and its other Conv1Ds become ``nn.Linear``: numerically the
same model, but every projection is a plain linear that adapters can wrap. Roles: q, k, v, o; gate and up are
``fc1``, down is ``fc2`` (select one of them by name pattern, e.g. ``*.gate_proj``).
"""

from __future__ import annotations

import inspect
from typing import Any, Literal

import torch
from torch import nn

from cl_suite.api import Batch, BlockView, LinearTarget, Task, TaskModel

PLAIN_TEMPLATE = "### Instruction:\n{prompt}\n\n### Response:\n"
PROMPT_FORMATS = ("auto", "chat", "plain", "raw")  # auto: chat when the tokenizer has a template, else plain
LLAMA_ROLES = {"self_attn.q_proj": "q", "self_attn.k_proj": "k", "self_attn.v_proj": "v", "self_attn.o_proj": "o",
               "mlp.gate_proj": "fc1", "mlp.up_proj": "fc1", "mlp.down_proj": "fc2"}  # fmt: skip
GPT2_ROLES = {"attn.c_attn.q": "q", "attn.c_attn.k": "k", "attn.c_attn.v": "v", "attn.c_proj": "o",
              "mlp.c_fc": "fc1", "mlp.c_proj": "fc2"}  # fmt: skip


class SplitQKV(nn.Module):
    """GPT-2's fused query/key/value projection as three linears; the output is their concatenation, as before."""

    def __init__(self, q: nn.Linear, k: nn.Linear, v: nn.Linear) -> None:
        super().__init__()
        self.q, self.k, self.v = q, k, v

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.q(x), self.k(x), self.v(x)], dim=-1)


def conv1d_to_linear(conv: nn.Module, rows: slice = slice(None)) -> nn.Linear:
    """transformers' Conv1D (weight (in, out), y = x W + b) as an ``nn.Linear``; ``rows`` picks output features."""
    weight, bias = conv.weight.data[:, rows].t().contiguous(), conv.bias.data[rows].clone()
    linear = nn.Linear(weight.shape[1], weight.shape[0], device=weight.device, dtype=weight.dtype)
    linear.weight.data.copy_(weight)
    linear.bias.data.copy_(bias)
    return linear


def split_gpt2(lm: nn.Module) -> None:
    """Make every projection of a GPT-2 model an ``nn.Linear`` (in place; outputs unchanged)."""
    for block in lm.transformer.h:
        attn, mlp = block.attn, block.mlp
        if not isinstance(attn.c_attn, SplitQKV):
            d = attn.embed_dim
            attn.c_attn = SplitQKV(*(conv1d_to_linear(attn.c_attn, slice(i * d, (i + 1) * d)) for i in range(3)))
        for parent, name in ((attn, "c_proj"), (mlp, "c_fc"), (mlp, "c_proj")):
            if type(getattr(parent, name)).__name__ == "Conv1D":
                setattr(parent, name, conv1d_to_linear(getattr(parent, name)))


def architecture(lm: nn.Module) -> Literal["llama", "gpt2"]:
    if hasattr(lm, "model") and hasattr(lm.model, "layers") and hasattr(lm.model.layers[0], "self_attn"):
        return "llama"
    if hasattr(lm, "transformer") and hasattr(lm.transformer, "h"):
        return "gpt2"
    raise ValueError(f"no adapter view for {type(lm).__name__}; supported: Llama-family causal LMs "
                     "(model.layers with q/k/v/o_proj and gate/up/down_proj) and GPT-2 (transformer.h)")  # fmt: skip


class LLMTaskModel(TaskModel):
    """A causal LM that learns ``prompt -> answer`` pairs and answers by greedy decoding."""

    def __init__(self, lm: nn.Module, tokenizer: Any, backbone_name: str, *, max_prompt_tokens: int = 512,
                 max_answer_tokens: int = 256, prompt_format: str = "auto") -> None:  # fmt: skip
        super().__init__()
        if prompt_format not in PROMPT_FORMATS:
            raise ValueError(f"prompt_format must be one of {', '.join(PROMPT_FORMATS)}, got {prompt_format!r}")
        if prompt_format == "chat" and not getattr(tokenizer, "chat_template", None):
            raise ValueError(f"prompt_format=chat, but the tokenizer of {backbone_name} has no chat template")
        self.arch = architecture(lm)
        if self.arch == "gpt2":
            split_gpt2(lm)
        self.lm = lm
        self.tokenizer = tokenizer
        self.backbone_name = backbone_name
        self.max_prompt_tokens = max_prompt_tokens
        self.max_answer_tokens = max_answer_tokens
        if prompt_format == "auto":
            prompt_format = "chat" if getattr(tokenizer, "chat_template", None) else "plain"
        self.prompt_format = prompt_format

    # -- text <-> tokens -------------------------------------------------------------------------------------
    def _device(self) -> torch.device:
        return next(self.lm.parameters()).device

    def prompt_ids(self, prompt: str) -> list[int]:
        """Token ids of the formatted prompt; the raw prompt is cut to ``max_prompt_tokens`` first (head kept)."""
        tok = self.tokenizer
        ids = tok(prompt, add_special_tokens=False).input_ids
        if self.prompt_format == "raw":  # BOS + the text, as O-LoRA's and TRACE's collators feed it
            bos = [] if tok.bos_token_id is None else [tok.bos_token_id]
            return bos + ids[: self.max_prompt_tokens]
        if len(ids) > self.max_prompt_tokens:
            prompt = tok.decode(ids[: self.max_prompt_tokens])
        if self.prompt_format == "chat":
            text = tok.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                           add_generation_prompt=True)  # fmt: skip
            return tok(text, add_special_tokens=False).input_ids
        return tok(PLAIN_TEMPLATE.format(prompt=prompt), add_special_tokens=True).input_ids

    def answer_ids(self, answer: str) -> list[int]:
        ids = self.tokenizer(answer, add_special_tokens=False).input_ids[: self.max_answer_tokens]
        return [*ids, self.tokenizer.eos_token_id]

    def encode_train(self, prompts: list[str], answers: list[str]) -> dict[str, torch.Tensor]:
        """Right-padded ``input_ids``, ``attention_mask`` and ``labels`` (-100 everywhere but the answer)."""
        rows = [(self.prompt_ids(p), self.answer_ids(a)) for p, a in zip(prompts, answers)]
        width = max(len(p) + len(a) for p, a in rows)
        pad = self.tokenizer.pad_token_id
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        labels = torch.full((len(rows), width), -100, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, (p, a) in enumerate(rows):
            n = len(p) + len(a)
            ids[i, :n] = torch.tensor(p + a)
            labels[i, len(p) : n] = torch.tensor(a)
            mask[i, :n] = 1
        device = self._device()
        return {"input_ids": ids.to(device), "attention_mask": mask.to(device), "labels": labels.to(device)}

    def encode_prompts(self, prompts: list[str]) -> dict[str, torch.Tensor]:
        """Left-padded prompts for generation."""
        rows = [self.prompt_ids(p) for p in prompts]
        width = max(map(len, rows))
        ids = torch.full((len(rows), width), self.tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):
            ids[i, width - len(row) :] = torch.tensor(row)
            mask[i, width - len(row) :] = 1
        device = self._device()
        return {"input_ids": ids.to(device), "attention_mask": mask.to(device)}

    def decode(self, ids: torch.Tensor) -> list[str]:
        return [t.strip() for t in self.tokenizer.batch_decode(ids.tolist(), skip_special_tokens=True)]

    # -- TaskModel -------------------------------------------------------------------------------------------
    def loss(self, batch: Batch, task: Task) -> torch.Tensor:
        return self.lm(**self.encode_train(list(batch["prompt"]), list(batch["answer"]))).loss

    @torch.no_grad()
    def predict(self, batch: Batch, task_id: int | None) -> torch.Tensor:
        """Greedy continuation of each prompt: (B, L) new token ids, pad id after EOS (L <= max_new_tokens: the
        loop stops once every row has ended)."""
        inputs = self.encode_prompts(list(batch["prompt"]))
        tok = self.tokenizer
        return greedy_generate(self.lm, inputs["input_ids"], inputs["attention_mask"],
                               int(batch.get("max_new_tokens", 32)), tok.eos_token_id, tok.pad_token_id)  # fmt: skip

    def linear_targets(self) -> list[LinearTarget]:
        prefix, layers, roles = (("lm.model.layers", self.lm.model.layers, LLAMA_ROLES) if self.arch == "llama"
                                 else ("lm.transformer.h", self.lm.transformer.h, GPT2_ROLES))  # fmt: skip
        targets = []
        for i, layer in enumerate(layers):
            for path, role in roles.items():
                module = layer.get_submodule(path)
                targets.append(LinearTarget(f"{prefix}.{i}.{path}", role, module))
        return targets

    def blocks(self) -> list[BlockView]:
        if self.arch == "llama":
            return [BlockView(i, b, b.self_attn, b.post_attention_layernorm, b.mlp)
                    for i, b in enumerate(self.lm.model.layers)]  # fmt: skip
        return [BlockView(i, b, b.attn, b.ln_2, b.mlp) for i, b in enumerate(self.lm.transformer.h)]


@torch.no_grad()
def greedy_generate(lm: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, max_new_tokens: int,
                    eos_id: int, pad_id: int) -> torch.Tensor:  # fmt: skip
    """Batched greedy decoding of left-padded prompts with the KV cache: one prefill, then one token per step;
    stops when every row has produced EOS. Returns the new ids (B, L), ``pad_id`` from each row's EOS on.

    The same tokens as ``lm.generate(do_sample=False)`` (a test checks it), without its per-step processors."""
    mask = attention_mask
    positions = (mask.cumsum(-1) - 1).clamp_min(0)
    # the prompt's last position is the only one whose logits are read (vocab x length otherwise)
    last_only = {"logits_to_keep": 1} if "logits_to_keep" in inspect.signature(lm.forward).parameters else {}
    out = lm(input_ids=input_ids, attention_mask=mask, position_ids=positions, use_cache=True, **last_only)
    cache_key = "cache" if "cache" in out else "past_key_values"  # transformers >= 5.2x names it cache
    steps = []
    done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
    for step in range(max_new_tokens):
        token = out.logits[:, -1].argmax(dim=-1)
        token = token.masked_fill(done, pad_id)
        steps.append(token)
        done |= token == eos_id
        if done.all() or step == max_new_tokens - 1:
            break
        mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=1)
        positions = positions[:, -1:] + 1
        out = lm(input_ids=token[:, None], attention_mask=mask, position_ids=positions, use_cache=True,
                 **{cache_key: out[cache_key]})  # fmt: skip
    new = torch.stack(steps, dim=1) if steps else input_ids.new_zeros((input_ids.shape[0], 0))
    return new.masked_fill(new == eos_id, pad_id)


def sorted_batches(lengths: list[int], batch_size: int) -> list[list[int]]:
    """Indices grouped into batches of similar length (longest first), so left padding wastes little compute."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
