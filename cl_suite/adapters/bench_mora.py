"""``cl-suite bench mora``: the cost of a MoRA layer (rank-1 atom bank, top-k self-activation) against the frozen linear.

One :class:`AdapterLinear` in ``topk`` gate mode with ``tasks × r`` atoms (MoRA's bank after that many tasks) is timed
against the bare ``nn.Linear`` it wraps, and against a naive layer that computes the same gate and then loops over the
tasks' atom groups (one shrink/expand per task, as an implementation without the shared op would). Modes: ``infer``
(eval mode, pruning at δ, no grad) and ``train`` (forward + backward of the current atoms and the input). The timers
are those of ``cl-suite bench kernels``: ``triton.testing.do_bench`` on CUDA (where the op runs the Triton kernel),
the min of interleaved repeats on a CPU.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from cl_suite.adapters.linear import AdapterLinear
from cl_suite.kernels.bench import make_timer, timed_call, write_csv
from cl_suite.kernels.reference import adapter_linear_loop

TASKS = (1, 5, 10)  # bank sizes: after the first, fifth and tenth task (X-TAIL has 10)


@dataclass
class MoraRow:
    mode: str  # infer | train
    d: int
    tasks: int
    atoms: int
    tokens: int
    added_params: int
    linear_ms: float
    mora_ms: float
    loop_ms: float

    @property
    def mora_vs_linear(self) -> float:
        return self.mora_ms / self.linear_ms

    @property
    def loop_vs_mora(self) -> float:
        return self.loop_ms / self.mora_ms


def mora_layer(d: int, tasks: int, rank: int, topk: int, temperature: float, threshold: float, device, dtype,
               seed: int = 0) -> AdapterLinear:  # fmt: skip
    """A d×d MoRA layer with ``tasks`` groups of ``rank`` atoms: all but the last frozen, B random (trained-looking)."""
    torch.manual_seed(seed)
    layer = AdapterLinear(nn.Linear(d, d), gate="topk", topk=topk, temperature=temperature, threshold=threshold)
    for t in range(tasks):
        layer.add_group(rank)
        with torch.no_grad():
            layer.groups[-1].B.normal_(std=0.02)
        if t < tasks - 1:
            layer.freeze_group(t)
    return layer.to(device, dtype)


def _loop(layer: AdapterLinear, x: torch.Tensor) -> torch.Tensor:
    """The same output with one shrink/expand per task group (the gate over the whole bank is computed once)."""
    gate = layer.gate_weights(x)
    groups, start = [], 0
    for g in layer.groups:
        groups.append((g.A, g.B, gate[..., start : start + g.rank]))
        start += g.rank
    return adapter_linear_loop(x, layer.base.weight, layer.base.bias, groups)


def _variants(layer: AdapterLinear, x: torch.Tensor, train: bool) -> dict[str, Callable[[], object]]:
    layer.train(train)
    xs = x.clone().requires_grad_(train)
    params = [xs, *layer.adapter_parameters()]
    run = lambda fn: timed_call(fn, train, params)  # noqa: E731
    return {
        "linear": run(lambda: layer.base(xs)),
        "mora": run(lambda: layer(xs)),
        "loop": run(lambda: _loop(layer, xs)),
    }


def run_bench(device: str = "cpu", d: int = 768, tokens: int | None = None, rank: int = 16, topk: int = 16,
              temperature: float = 0.01, threshold: float = 0.2, tasks: tuple[int, ...] = TASKS, reps: int = 5,
              csv_path: str | Path | None = None, progress: Callable[[str], None] = print) -> list[MoraRow]:  # fmt: skip
    """Time the MoRA layer for each bank size in ``tasks`` (defaults: CLIP ViT-B/16 width and MoRA's CLIP knobs)."""
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda asked for, but torch sees no CUDA device; use --device cpu")
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"unknown device {device!r}; accepted: cpu, cuda")
    if min(d, rank, topk, *tasks) < 1:
        raise ValueError("d, rank, topk and every bank size in tasks must be >= 1")
    dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32
    tokens = tokens or (197 * 64 if dev.type == "cuda" else 512)  # a CLIP batch of 64 images; a small one on a CPU
    timer = make_timer(dev, reps)
    x = torch.randn(tokens, d, generator=torch.Generator().manual_seed(1)).to(dev, dtype)
    rows = []
    for i, t in enumerate(tasks, 1):
        layer = mora_layer(d, t, rank, topk, temperature, threshold, dev, dtype)
        added = sum(p.numel() for p in layer.adapter_parameters(False))
        for train in (False, True):
            ms = timer(_variants(layer, x, train))
            rows.append(MoraRow("train" if train else "infer", d, t, layer.rank, tokens, added, ms["linear"], ms["mora"],
                                ms["loop"]))  # fmt: skip
        progress(f"[{i}/{len(tasks)}] MoRA layer d={d} tasks={t} atoms={layer.rank} N={tokens}")
    if csv_path:
        write_csv(rows, csv_path, ("mora_vs_linear", "loop_vs_mora"))
    return rows


def render(rows: list[MoraRow], device: str) -> str:
    from tabulate import tabulate

    table = [[r.mode, r.d, r.tasks, r.atoms, r.tokens, r.added_params, r.linear_ms, r.mora_ms, r.loop_ms,
              f"{r.mora_vs_linear:.2f}x", f"{r.loop_vs_mora:.2f}x"] for r in rows]  # fmt: skip
    headers = ["mode", "d", "tasks", "atoms", "N", "added params", "linear ms", "MoRA ms", "loop ms", "MoRA/linear",
               "loop/MoRA"]  # fmt: skip
    op = "the Triton fused op" if device.startswith("cuda") else "the PyTorch path"
    note = (f"MoRA = gate (z=x·A, top-k, softmax/τ; pruning at δ in infer) + one call of {op}; loop = the same gate, "
            f"then one shrink/expand per task; times are " + ("do_bench means" if device.startswith("cuda")
                                                             else "the min of interleaved repeats"))  # fmt: skip
    return tabulate(table, headers=headers, floatfmt=".3f") + "\n" + note
