"""``cl-suite bench kernels``: the adapter op against the frozen linear and against a naive per-group loop.

On CUDA (timed with ``triton.testing.do_bench``): the fused Triton op vs the unfused PyTorch reference vs the loop.
On a CPU (min of interleaved ``perf_counter`` repeats, robust to a shared machine): the PyTorch path as the layer
dispatches it (folded into the weight when that is cheaper, cl_suite.kernels.folded) vs the loop, and both vs the
frozen ``nn.Linear`` alone. Every row is timed forward only and forward + backward (gradients for x and the
adapters; W frozen). Results print as a table and are saved as CSV.

The "target" rows are the layer-level check of the issue: one AdapterLinear with 10 groups × rank 16 at d=768,
N=4096: all groups live and training; as in continual learning with the nine earlier groups kept but frozen (the op
gets ``frozen_ranks``; the loop computes no gradient for them); and with the nine merged into W, one live.
"""

from __future__ import annotations

import csv
import itertools
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from cl_suite.kernels import adapter_linear
from cl_suite.kernels.reference import adapter_linear_loop, adapter_linear_reference

DIMS, RANKS, TOKENS, GROUPS = (768, 4096), (8, 64, 256), (1, 16, 512, 8192), 4
# the layer-level check: (name, d, total rank, groups, N, groups merged into W, groups frozen)
TARGETS = (
    ("target: 10x16 live", 768, 160, 10, 4096, 0, 0),
    ("target: 9 frozen + 1 trainable", 768, 160, 10, 4096, 0, 9),
    ("target: 9 merged + 1 live", 768, 160, 10, 4096, 9, 0),
)
CPU_MAX_TOKENS = 512  # the d=4096, N=8192 linear takes seconds per call on a small CPU; --full includes it


@dataclass
class Row:
    case: str
    mode: str  # fwd | fwd+bwd
    d: int
    rank: int
    groups: int
    tokens: int
    linear_ms: float
    op_ms: float  # the layer's op: Triton fused on CUDA, the PyTorch path on a CPU
    unfused_ms: float | None  # CUDA only: the PyTorch reference
    loop_ms: float

    @property
    def op_vs_linear(self) -> float:
        return self.op_ms / self.linear_ms

    @property
    def loop_vs_op(self) -> float:
        return self.loop_ms / self.op_ms

    @property
    def unfused_vs_op(self) -> float | None:
        return None if self.unfused_ms is None else self.unfused_ms / self.op_ms


def make_timer(device: torch.device, reps: int) -> Callable[[dict[str, Callable[[], object]]], dict[str, float]]:
    if device.type == "cuda":
        from triton.testing import do_bench

        return lambda fns: {k: float(do_bench(f, warmup=25, rep=100)) for k, f in fns.items()}

    def cpu(fns: dict[str, Callable[[], object]]) -> dict[str, float]:
        best = dict.fromkeys(fns, float("inf"))
        for f in fns.values():  # warm-up
            f()
        for _ in range(reps):  # interleaved, so load from other processes hits every variant alike
            for k, f in fns.items():
                t0 = time.perf_counter()
                f()
                best[k] = min(best[k], time.perf_counter() - t0)
        return {k: v * 1e3 for k, v in best.items()}

    return cpu


def timed_call(fn: Callable[[], torch.Tensor], backward: bool, leaves: list[torch.Tensor]) -> Callable[[], object]:
    """What a timer calls: ``fn`` under no_grad, or ``fn`` then a backward of ones, clearing the leaves' grads."""
    if not backward:

        def fwd():
            with torch.no_grad():
                return fn()

        return fwd

    def fwd_bwd():
        y = fn()
        y.backward(torch.ones_like(y))
        for t in leaves:
            t.grad = None

    return fwd_bwd


def _case(device, dtype, d: int, rank: int, groups: int, tokens: int, merged: int = 0):
    """Operands for one shape: a frozen linear and ``groups`` groups, the first ``merged`` of them folded into W."""
    gen = torch.Generator().manual_seed(0)
    lin = nn.Linear(d, d).to(device, dtype).requires_grad_(False)
    r = max(rank // groups, 1)
    mk = lambda *s: (torch.randn(*s, generator=gen) * 0.02).to(device, dtype)  # noqa: E731
    factors = [(mk(d, r), mk(r, d), torch.full((r,), 2.0, device=device, dtype=dtype)) for _ in range(groups)]
    weight = lin.weight.clone()
    for A, B, g in factors[:merged]:  # merged groups: folded into the weight, as AdapterLinear.merge_groups
        weight += ((A * g) @ B).t()
    kept = factors[merged:]
    A = torch.cat([f[0] for f in kept], 1)
    B = torch.cat([f[1] for f in kept], 0)
    gate = torch.cat([f[2] for f in kept])
    x = torch.randn(tokens, d, generator=gen).to(device, dtype)
    return lin, weight, A, B, gate, factors, x


def _variants(device, lin, weight, A, B, gate, factors, x, backward: bool, merged: int = 0,
              frozen: int = 0) -> dict[str, Callable[[], object]]:  # fmt: skip
    """The timed callables. Merged groups and the first ``frozen`` live ones do not train (no gradient in the loop;
    ``frozen_ranks`` for the op)."""
    params = [A, B, *[t for f in factors[merged + frozen :] for t in f[:2]]]
    xs = x.clone()
    for t in (*params, xs):
        t.requires_grad_(backward)
    kw = {"weight": weight, "bias": lin.bias, "frozen_ranks": frozen * factors[0][0].shape[1]}
    run = lambda fn: timed_call(fn, backward, [*params, xs])  # noqa: E731

    fns = {
        "linear": run(lambda: lin(xs)),
        "op": run(lambda: adapter_linear(xs, A, B, gate, backend="torch", **kw)),
        "loop": run(lambda: adapter_linear_loop(xs, lin.weight, lin.bias, factors)),
    }
    if device.type == "cuda":
        from cl_suite.kernels.triton_adapter import adapter_linear_triton

        fns["unfused"] = run(lambda: adapter_linear_reference(xs, A, B, gate, **kw))
        fns["op"] = run(lambda: adapter_linear_triton(xs, A, B, gate, **kw))
    return fns


def run_bench(device: str = "cpu", csv_path: str | Path | None = None, full: bool = False, reps: int = 5,
              progress: Callable[[str], None] = print) -> list[Row]:  # fmt: skip
    """Time every shape of the grid plus the target rows; write the CSV if asked."""
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda asked for, but torch sees no CUDA device; use --device cpu")
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"unknown device {device!r}; accepted: cpu, cuda")
    dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32
    timer = make_timer(dev, reps)
    max_tokens = max(TOKENS) if (full or dev.type == "cuda") else CPU_MAX_TOKENS
    grid = itertools.product(DIMS, RANKS, TOKENS)
    cases = [("grid", d, r, GROUPS, n, 0, 0) for d, r, n in grid if n <= max_tokens] + list(TARGETS)
    rows = []
    for i, (name, d, rank, groups, n, merged, frozen) in enumerate(cases, 1):
        case = _case(dev, dtype, d, rank, groups, n, merged)
        for backward in (False, True):
            t = timer(_variants(dev, *case, backward, merged, frozen))
            rows.append(Row(name, "fwd+bwd" if backward else "fwd", d, rank, groups, n, t["linear"], t["op"],
                            t.get("unfused"), t["loop"]))  # fmt: skip
        progress(f"[{i}/{len(cases)}] {name} d={d} R={rank} groups={groups} N={n}")
    if csv_path:
        write_csv(rows, csv_path, ("op_vs_linear", "loop_vs_op", "unfused_vs_op"))
    return rows


def write_csv(rows: list, path: str | Path, derived: tuple[str, ...] = ()) -> None:
    """Save bench rows (dataclasses) as CSV: their fields, then the ``derived`` properties (ratios) of each row.
    Shared by every ``cl-suite bench`` command."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=[*asdict(rows[0]).keys(), *derived])
        w.writeheader()
        for r in rows:
            w.writerow({**asdict(r), **{name: getattr(r, name) for name in derived}})


def render(rows: list[Row], device: str) -> str:
    """A text table; on CUDA "op" is the fused Triton kernel, on a CPU the PyTorch path."""
    from tabulate import tabulate

    cuda = device.startswith("cuda")
    headers = ["case", "mode", "d", "R", "groups", "N", "linear ms", "op ms", *(["unfused ms"] if cuda else []),
               "loop ms", "op/linear", "loop/op", *(["unfused/op"] if cuda else [])]  # fmt: skip
    table = []
    for r in rows:
        table.append([r.case, r.mode, r.d, r.rank, r.groups, r.tokens, r.linear_ms, r.op_ms,
                      *([r.unfused_ms] if cuda else []), r.loop_ms, f"{r.op_vs_linear:.2f}x", f"{r.loop_vs_op:.2f}x",
                      *([f"{r.unfused_vs_op:.2f}x"] if cuda else [])])  # fmt: skip
    op = "Triton fused" if cuda else "PyTorch path (one op call, folded into W when cheaper)"
    note = f"op = {op}; loop = frozen linear + one shrink/expand per group; times are " + (
        "do_bench means" if cuda else "the min of interleaved repeats")
    return "\n".join([tabulate(table, headers=headers, floatfmt=".3f"), note, *target_lines(rows, cuda)])


def target_lines(rows: list[Row], cuda: bool) -> list[str]:
    """The issue's targets checked against the measured rows: on a CPU the layer vs the frozen linear (<= 1.3x) and
    vs the per-group loop (>= 3x); on CUDA the fused kernel vs unfused PyTorch at d=768, R=64 (>= 1.3x at N=8192
    forward + backward, >= 2x at N <= 16)."""
    verdict = lambda ok: "met" if ok else "NOT met"  # noqa: E731
    lines = []
    for r in rows:
        if cuda and r.case == "grid" and (r.d, r.rank) == (768, 64) and r.unfused_vs_op is not None:
            goal = 1.3 if r.tokens == 8192 and r.mode == "fwd+bwd" else 2.0 if r.tokens <= 16 else None
            if goal is not None:
                lines.append(f"target N={r.tokens} {r.mode}: unfused/fused {r.unfused_vs_op:.2f}x "
                             f"(>= {goal}x: {verdict(r.unfused_vs_op >= goal)})")  # fmt: skip
        elif not cuda and r.case.startswith("target"):
            lines.append(f"{r.case} {r.mode}: op/linear {r.op_vs_linear:.2f}x (<= 1.3x: {verdict(r.op_vs_linear <= 1.3)})"
                         f", loop/op {r.loop_vs_op:.2f}x (>= 3x: {verdict(r.loop_vs_op >= 3)})")  # fmt: skip
    return lines
