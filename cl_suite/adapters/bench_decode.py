"""``cl-suite bench decode``: what dynamic adapters cost per generated token, against the base model, side by side.

Greedy decoding with a KV cache on a causal LM (SmolLM2-135M by default; ``tiny`` is a random 2-layer Llama for
tests). After a short prompt (prefill, not timed), each variant decodes ``new_tokens`` tokens one at a time; the
per-token latency is the decode time divided by the steps. Variants share one model: each is installed (its
adapter modules swapped in for the targets, its routers hooked on the blocks), timed, and removed, round after
round, and the minimum over rounds is kept, so load from other processes hits every variant alike.

Variants (adapters on q, k, v, o unless said; B drawn at std 0.02 so every rank contributes):
base; LoRA r=8 merged into W; LoRA r=8 unmerged (one fused-op call per layer); MoRA (LLM defaults: r=8 atoms per
task, k=8, τ=0.03, δ=0.2) after 1, 5 and 10 tasks; lora-switch (8 experts r=8, top-2 per token routed at the first
block) unmerged and with the per-token merge into W; smora (r=16 ranks, top-8 per token, per-layer router);
milora (q, k, v, o, gate, up, down as experts, r=32, top-3 per block, routed at the prompt and reused); and the
naive loop the papers contrast: 8 LoRA experts r=8 per layer, a per-layer top-2 router per token, one
shrink/expand call per expert (MoLA/MoRAL-style). The target is the LoRA-Switch anchor: every dynamic method
within 1.3x of the base model's per-token latency at batch 1.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from cl_suite.adapters.inject import select_targets
from cl_suite.adapters.linear import AdapterLinear
from cl_suite.adapters.routing import PromptBinding, RankRouter, SwitchBinding, TokenPreGate
from cl_suite.kernels.bench import write_csv
from cl_suite.kernels.reference import adapter_linear_loop

TARGET = 1.3  # LoRA-Switch's anchor: dynamic adapters within 1.3x of the base model per token
DYNAMIC = ("mora-1", "mora-5", "mora-10", "lora-switch", "lora-switch-merge", "smora", "milora")
QKVO = ("q", "k", "v", "o")
ALL7 = ("q", "k", "v", "o", "fc1", "fc2")


@dataclass
class DecodeRow:
    variant: str
    targets: str
    ranks_per_layer: int
    added_params: int
    ms_per_token: float
    base_ms_per_token: float

    @property
    def tokens_per_s(self) -> float:
        return 1e3 / self.ms_per_token

    @property
    def ratio(self) -> float:
        return self.ms_per_token / self.base_ms_per_token


@dataclass
class Variant:
    """Modules to swap in by target name, plus hooks to attach/detach (routers)."""

    name: str
    targets: str
    modules: dict[str, nn.Module]
    attach: Callable[[], None] = lambda: None
    detach: Callable[[], None] = lambda: None

    def added_params(self) -> int:
        seen, n = set(), 0
        for m in self.modules.values():
            extra = m.adapter_parameters(False) if isinstance(m, AdapterLinear) else []
            for p in extra:
                if id(p) not in seen:
                    seen.add(id(p))
                    n += p.numel()
        return n + getattr(self, "router_params", 0)

    def ranks(self) -> int:
        m = next(iter(self.modules.values()))
        return m.rank if isinstance(m, AdapterLinear) else getattr(m, "rank", 0)


class LoopMoELinear(nn.Module):
    """The naive dynamic MoE-LoRA layer: a per-layer token router (top-2) and one shrink/expand call per expert."""

    def __init__(self, base: nn.Linear, experts: int, rank: int, topk: int = 2, std: float = 0.02) -> None:
        super().__init__()
        self.base = base
        w = base.weight
        self.A = nn.ParameterList(nn.Parameter(torch.randn(base.in_features, rank, dtype=w.dtype, device=w.device)
                                               / base.in_features**0.5) for _ in range(experts))  # fmt: skip
        self.B = nn.ParameterList(nn.Parameter(torch.randn(rank, base.out_features, dtype=w.dtype, device=w.device)
                                               * std) for _ in range(experts))  # fmt: skip
        self.router = TokenPreGate(base.in_features, topk)
        self.router.grow(experts, w)
        self.rank = experts * rank

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = self.router(x)
        groups = [(A, B, g[..., e : e + 1].expand(*g.shape[:-1], A.shape[1]))
                  for e, (A, B) in enumerate(zip(self.A, self.B))]  # fmt: skip
        return adapter_linear_loop(x, self.base.weight, self.base.bias, groups)


def _adapters(targets: dict[str, nn.Linear], gate: str, groups: int, rank: int, alpha: float | None, std: float,
              **kwargs) -> dict[str, AdapterLinear]:  # fmt: skip
    layers = {}
    for name, base in targets.items():
        layer = AdapterLinear(base, gate=gate, **kwargs)
        for _ in range(groups):
            layer.add_group(rank, alpha=alpha)
            with torch.no_grad():
                layer.groups[-1].B.normal_(std=std)
        layer.freeze()
        layers[name] = layer.eval()
    return layers


def build_variants(model, std: float = 0.02) -> list[Variant]:
    """Every variant of the table over ``model`` (an LLMTaskModel); adapters wrap the model's own linears."""
    qkvo = dict(select_targets(model, QKVO))
    all7 = dict(select_targets(model, ALL7))
    blocks = model.blocks()
    out = [Variant("base", "-", dict(qkvo))]

    lora = _adapters(qkvo, "none", 1, 8, 16.0, std)
    merged = {}
    for name, layer in lora.items():
        lin = nn.Linear(layer.in_features, layer.out_features, bias=layer.bias is not None)
        lin = lin.to(layer.base.weight.device, layer.base.weight.dtype).requires_grad_(False)
        with torch.no_grad():
            g = layer.groups[0]
            lin.weight.copy_(layer.base.weight + ((g.A * g.scale) @ g.B).t())
            if layer.bias is not None:
                lin.bias.copy_(layer.bias)
        merged[name] = lin
    out += [Variant("lora-merged", "q,k,v,o", merged), Variant("lora-unmerged", "q,k,v,o", lora)]
    for tasks in (1, 5, 10):
        mora = _adapters(qkvo, "topk", tasks, 8, 16.0, std, topk=8, temperature=0.03, threshold=0.2)
        out.append(Variant(f"mora-{tasks}", "q,k,v,o", mora))

    switch = _adapters(qkvo, "external", 8, 8, 16.0, std)
    binding = SwitchBinding(model, blocks, switch, topk=2)  # one router for both: the same routing, two paths
    binding.grow(8)
    binding.gates.eval()
    for merge in (False, True):

        def switch_on(merge=merge) -> None:
            binding.merge = merge
            binding.attach()

        v = Variant("lora-switch-merge" if merge else "lora-switch", "q,k,v,o", switch, switch_on, binding.detach)
        v.router_params = sum(p.numel() for p in binding.gates.parameters())
        out.append(v)

    smora = _adapters(qkvo, "external", 1, 16, 32.0 / 8 * 16, std)
    routers = []
    for layer in smora.values():
        router = RankRouter(layer.in_features, 8).to(layer.base.weight.device)
        router.grow(16, layer.base.weight)
        routers.append(router.eval())

    def smora_on(layers=smora, routers=routers) -> None:
        for layer, router in zip(layers.values(), routers):
            layer.gate_source = router.__call__

    v = Variant("smora", "q,k,v,o", smora, smora_on)
    v.router_params = sum(p.numel() for r in routers for p in r.parameters())
    out.append(v)

    milora = _adapters(all7, "external", 1, 32, 32.0, std)
    pb = PromptBinding(blocks, milora, topk=3, model=model, watch=model.lm)
    pb.grow()
    pb.routers.eval()
    v = Variant("milora", "q,k,v,o,gate,up,down", milora, pb.attach, pb.detach)
    v.router_params = sum(p.numel() for p in pb.routers.parameters())
    out.append(v)

    loop = {n: LoopMoELinear(m, 8, 8, std=std).eval() for n, m in qkvo.items()}
    v = Variant("naive-loop", "q,k,v,o", loop)
    v.router_params = sum(p.numel() for m in loop.values() for p in m.parameters()) - sum(
        m.base.weight.numel() + (m.base.bias.numel() if m.base.bias is not None else 0) for m in loop.values())
    out.append(v)
    return out


def _swap(model: nn.Module, modules: dict[str, nn.Module]) -> None:
    for name, module in modules.items():
        parent_name, _, attr = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, attr, module)


@torch.no_grad()
def decode_ms_per_token(lm: nn.Module, prompt: torch.Tensor, new_tokens: int) -> float:
    """Greedy decoding with a KV cache: the mean time of the decode steps after the (untimed) prefill."""
    out = lm(input_ids=prompt, use_cache=True)
    past, tok = out.past_key_values, out.logits[:, -1:].argmax(-1)
    t0 = time.perf_counter()
    for _ in range(new_tokens):
        out = lm(input_ids=tok, past_key_values=past, use_cache=True)
        past, tok = out.past_key_values, out.logits[:, -1:].argmax(-1)
    if tok.is_cuda:
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) * 1e3 / new_tokens


def load_model(spec: str, device: torch.device):
    from cl_suite.models import llm_backbones
    from cl_suite.models.llm import LLMTaskModel

    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    if spec == "tiny":
        torch.manual_seed(0)
        loaded = llm_backbones.tiny_llama()
        loaded.model.to(dtype).eval()
    else:
        loaded = llm_backbones.load(spec, dtype)
    model = LLMTaskModel(loaded.model.to(device), loaded.tokenizer, loaded.name)
    model.requires_grad_(False)
    return model.eval()


def run_bench(device: str = "cpu", model: str = "smollm2-135m", new_tokens: int = 32, prompt_tokens: int = 16,
              batch: int = 1, reps: int = 3, csv_path: str | Path | None = None,
              progress: Callable[[str], None] = print) -> list[DecodeRow]:  # fmt: skip
    """Time every variant's greedy decoding, interleaved over ``reps`` rounds (the minimum is kept)."""
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda asked for, but torch sees no CUDA device; use --device cpu")
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"unknown device {device!r}; accepted: cpu, cuda")
    if min(new_tokens, prompt_tokens, batch, reps) < 1:
        raise ValueError("--new-tokens, --prompt-tokens, --batch and --reps must be >= 1")
    task_model = load_model(model, dev)
    torch.manual_seed(0)
    variants = build_variants(task_model)
    for v in variants:
        for m in v.modules.values():
            m.to(dev)
    vocab = task_model.lm.config.vocab_size
    prompt = torch.randint(3, vocab, (batch, prompt_tokens), generator=torch.Generator().manual_seed(1)).to(dev)
    base_modules = dict(variants[0].modules)
    best = {v.name: float("inf") for v in variants}
    for r in range(reps + 1):  # round 0 warms up
        for v in variants:
            _swap(task_model, v.modules)
            v.attach()
            try:
                ms = decode_ms_per_token(task_model.lm, prompt, new_tokens)
            finally:
                v.detach()
                _swap(task_model, base_modules)
            if r > 0:
                best[v.name] = min(best[v.name], ms)
        progress(f"[{r}/{reps}] {'warm-up' if r == 0 else 'round'}: {len(variants)} variants x {new_tokens} tokens")
    base = best["base"]
    rows = [DecodeRow(v.name, v.targets, v.ranks(), v.added_params(), best[v.name], base) for v in variants]
    if csv_path:
        write_csv(rows, csv_path, ("tokens_per_s", "ratio"))
    return rows


def render(rows: list[DecodeRow], device: str) -> str:
    from tabulate import tabulate

    table = [[r.variant, r.targets, r.ranks_per_layer, r.added_params, r.ms_per_token, r.tokens_per_s,
              f"{r.ratio:.2f}x"] for r in rows]  # fmt: skip
    headers = ["variant", "targets", "ranks/layer", "added params", "ms/token", "tokens/s", "vs base"]
    lines = [tabulate(table, headers=headers, floatfmt=".2f"), ""]
    for r in rows:
        if r.variant in DYNAMIC:
            verdict = "met" if r.ratio <= TARGET else "NOT met"
            lines.append(f"{r.variant}: {r.ratio:.2f}x the base model per token -> {TARGET}x target {verdict}")
        elif r.variant == "naive-loop":
            lines.append(f"naive-loop (contrast, no target): {r.ratio:.2f}x the base model per token")
    timer = "the min over interleaved rounds" + (" (CUDA, synchronised at the end)" if device.startswith("cuda") else "")
    lines.append(f"per-token latency = decode steps after an untimed prefill, greedy, KV cache; {timer}")
    return "\n".join(lines)
