"""``cl-suite bench generate``: examples/s of the LLM evaluation path against plain ``model.generate`` loops.

Same model, same examples (llm-tiny's test prompts, loaded through the registry), same generation budget (the
longest tokenized answer + EOS), greedy. Variants:

- ``eval path``: what the LLM scenarios' ``evaluate`` runs: prompts sorted by token length, batches of
  ``batch_size``, :func:`cl_suite.models.llm.greedy_generate` (KV cache, stops when every row has ended).
- ``generate, batched``: ``lm.generate`` on batches of ``batch_size`` in the data's order (the previous eval path).
- ``generate, one by one``: a plain loop of ``lm.generate`` per example.

The outputs of the three are compared token by token; one timed run each (the machine's load moves the figures, so
read the ratios, which come from the same run).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from cl_suite.kernels.bench import write_csv


@dataclass
class GenRow:
    variant: str
    examples: int
    batch_size: int
    seconds: float
    examples_per_s: float
    speedup_of_eval_path: float  # this variant's time / the eval path's
    same_tokens: bool  # the same greedy tokens as the eval path


def _examples(backbone: str, n: int) -> list[dict[str, str]]:
    from cl_suite import registry

    cls = registry.load("scenario", "llm-tiny")
    scenario = cls(cls.Config(backbone=backbone))
    pool = [task.test[i] for task in scenario.tasks() for i in range(len(task.test))]
    if not pool:
        raise ValueError("llm-tiny produced no test examples")
    return [pool[(i * 7) % len(pool)] for i in range(n)]  # spread over the tasks


def run_bench(device: str = "cpu", backbone: str = "smollm2-135m", batch_size: int = 16, examples: int = 48,
              reps: int = 1, csv_path: str | Path | None = None,
              progress: Callable[[str], None] = print) -> list[GenRow]:  # fmt: skip
    from transformers import GenerationConfig

    from cl_suite.models import llm_backbones
    from cl_suite.models.llm import LLMTaskModel, sorted_batches

    if min(batch_size, examples, reps) < 1:
        raise ValueError("--batch-size, --examples and --reps must be >= 1")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda asked for, but torch sees no CUDA device; use --device cpu")
    data = _examples(backbone, examples)
    loaded = llm_backbones.load(backbone)
    model = LLMTaskModel(loaded.model, loaded.tokenizer, loaded.name).to(dev).eval()
    tok = model.tokenizer
    budget = max(len(model.answer_ids(e["answer"])) for e in data)
    prompts = [e["prompt"] for e in data]
    gen_config = GenerationConfig(max_new_tokens=budget, do_sample=False, pad_token_id=tok.pad_token_id,
                                  eos_token_id=tok.eos_token_id)  # fmt: skip

    def trim(ids: torch.Tensor) -> list[list[int]]:
        ids = ids.masked_fill((ids == tok.eos_token_id).long().cumsum(1) > 0, tok.pad_token_id)
        return [[t for t in row if t != tok.pad_token_id] for row in ids.tolist()]

    def eval_path() -> list[list[int]]:
        out: list[list[int]] = [[] for _ in prompts]
        for chunk in sorted_batches([len(model.prompt_ids(p)) for p in prompts], batch_size):
            ids = model.predict({"prompt": [prompts[i] for i in chunk], "max_new_tokens": budget}, None)
            for i, row in zip(chunk, trim(ids)):
                out[i] = row
        return out

    def generate_batched() -> list[list[int]]:
        out = []
        for start in range(0, len(prompts), batch_size):
            inputs = model.encode_prompts(prompts[start : start + batch_size])
            ids = model.lm.generate(**inputs, generation_config=gen_config)
            out += trim(ids[:, inputs["input_ids"].shape[1] :])
        return out

    def generate_one_by_one() -> list[list[int]]:
        out = []
        for prompt in prompts:
            inputs = model.encode_prompts([prompt])
            ids = model.lm.generate(**inputs, generation_config=gen_config)
            out += trim(ids[:, inputs["input_ids"].shape[1] :])
        return out

    variants = {"eval path": eval_path, "generate, batched": generate_batched,
                "generate, one by one": generate_one_by_one}  # fmt: skip
    times, outputs = {}, {}
    with torch.no_grad():
        warm = prompts[:2]  # one untimed call per path first: allocator and kernel selection are not timed
        model.predict({"prompt": warm, "max_new_tokens": 2}, None)
        model.lm.generate(**model.encode_prompts(warm), generation_config=GenerationConfig(
            max_new_tokens=2, do_sample=False, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id))
        for name, fn in variants.items():
            best = float("inf")
            for _ in range(reps):
                t0 = time.perf_counter()
                outputs[name] = fn()
                best = min(best, time.perf_counter() - t0)
            times[name] = best
            progress(f"{name}: {examples} examples in {best:.1f} s ({loaded.name}, batch {batch_size}, "
                     f"{budget} new tokens at most)")  # fmt: skip
    rows = [GenRow(name, examples, 1 if name.endswith("one by one") else batch_size, times[name],
                   examples / times[name], times[name] / times["eval path"], outputs[name] == outputs["eval path"])
            for name in variants]  # fmt: skip
    if csv_path:
        write_csv(rows, csv_path)
    return rows


def render(rows: list[GenRow], device: str) -> str:
    from tabulate import tabulate

    table = [[r.variant, r.examples, r.batch_size, r.seconds, r.examples_per_s, f"{r.speedup_of_eval_path:.2f}x",
              "yes" if r.same_tokens else "NO"] for r in rows]  # fmt: skip
    headers = ["variant", "examples", "batch", "seconds", "examples/s", "time / eval path", "same tokens"]
    return (tabulate(table, headers=headers, floatfmt=".2f") + f"\n{device}; greedy; one timed run per variant "
            "(the minimum of --reps runs); eval path = length-sorted batches + the KV-cache greedy loop")
