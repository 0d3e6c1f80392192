"""The adapter op in plain PyTorch: the specification every backend must match, and the CPU production path.

    y = x·Wᵀ (+ bias) + (act(x·A + b_down) ⊙ gate)·B (+ b_up)

Shapes: ``x`` (..., d_in); ``weight`` (d_out, d_in) as in ``nn.Linear`` (optional: adapter-only paths such as SEMA's
mixture pass None); ``A`` (d_in, R); ``B`` (R, d_out); ``gate`` (G, R) over groups of consecutive token rows, see
:func:`gate_layout`; ``b_down`` (R,); ``b_up`` (d_out,). ``act`` is one of :data:`ACTS`.

The gate multiplies the *activated* shrink, so a gate over experts is a weighted mixture of experts
(``Σ_e g_e·up_e(act(down_e x))``). DESIGN.md writes ``act((x·A) ⊙ gate)``: the two agree for the identity (LoRA, MoRA,
CoDyRA) and for ReLU with non-negative gates, and only the form used here is a mixture for GELU.

Autograd through :func:`adapter_linear_reference` is the gradient specification of the fused kernels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

ACTS = ("identity", "relu", "gelu")


def gate_layout(x_shape: torch.Size, gate: torch.Tensor | None, rank: int) -> tuple[torch.Tensor | None, int]:
    """Normalise a gate to ``(G, R)`` rows plus the number of consecutive token rows each gate row covers.

    Accepted: ``(R,)`` shared by all tokens; ``(S, R)`` per sample when ``x`` is ``(S, L, d_in)`` (broadcast over its
    L tokens); ``x.shape[:-1] + (R,)`` per token. ``None`` means no gate.
    """
    if gate is None:
        return None, 1
    if gate.shape[-1] != rank:
        raise ValueError(f"gate has {gate.shape[-1]} columns, expected the adapter rank {rank}")
    lead = tuple(x_shape[:-1])
    n = 1
    for s in lead:
        n *= s
    if gate.dim() == 1:
        return gate.reshape(1, rank), max(n, 1)
    if tuple(gate.shape[:-1]) == lead:
        return gate.reshape(-1, rank), 1
    if len(lead) >= 2 and gate.dim() == 2 and gate.shape[0] == lead[0]:
        return gate, max(n // lead[0], 1)
    raise ValueError(f"gate shape {tuple(gate.shape)} does not fit x of shape {tuple(x_shape)}; accepted: ({rank},) "
                     f"shared, (batch, {rank}) per sample, or x.shape[:-1] + ({rank},) per token")  # fmt: skip


def activation(h: torch.Tensor, act: str) -> torch.Tensor:
    if act == "identity":
        return h
    if act == "relu":
        return F.relu(h)
    if act == "gelu":
        return F.gelu(h)
    raise ValueError(f"unknown activation {act!r}; accepted: {', '.join(ACTS)}")


def check_args(x: torch.Tensor, A: torch.Tensor, B: torch.Tensor, weight: torch.Tensor | None, act: str) -> None:
    """One-line errors for mismatched shapes, shared by every backend."""
    if act not in ACTS:
        raise ValueError(f"unknown activation {act!r}; accepted: {', '.join(ACTS)}")
    if A.dim() != 2 or B.dim() != 2 or A.shape[1] != B.shape[0]:
        raise ValueError(f"A must be (d_in, R) and B (R, d_out), got {tuple(A.shape)} and {tuple(B.shape)}")
    if x.shape[-1] != A.shape[0]:
        raise ValueError(f"x has {x.shape[-1]} features, A expects {A.shape[0]}")
    if weight is not None and tuple(weight.shape) != (B.shape[1], A.shape[0]):
        raise ValueError(f"weight must be (d_out, d_in) = ({B.shape[1]}, {A.shape[0]}), got {tuple(weight.shape)}")


def split_ranks(A: torch.Tensor, B: torch.Tensor, gate: torch.Tensor | None, down_bias: torch.Tensor | None,
                frozen_ranks: int) -> tuple[tuple, tuple]:  # fmt: skip
    """``(A, B, gate, down_bias)`` of ranks ``[0, frozen_ranks)``, detached, and of the remaining ranks as given.

    The op is a sum over ranks (the activation and the gate act per rank), so frozen ranks can be computed apart
    with no autograd graph: they still contribute to the output and to ``dx``, but no ``dA``/``dB``/``dgate`` work is
    spent on them. The caller guarantees that those ranks do not need gradients (a static gate; frozen groups)."""
    rank = A.shape[1]
    if not 0 <= frozen_ranks <= rank:
        raise ValueError(f"frozen_ranks must be in [0, {rank}], got {frozen_ranks}")

    def part(lo: int, hi: int, detach: bool) -> tuple:
        cut = lambda t, dim: None if t is None else t.narrow(dim, lo, hi - lo)  # noqa: E731
        parts = (cut(A, 1), cut(B, 0), cut(gate, gate.dim() - 1 if gate is not None else 0), cut(down_bias, 0))
        return tuple(None if t is None else t.detach() for t in parts) if detach else parts

    return part(0, frozen_ranks, True), part(frozen_ranks, rank, False)


def pad_frozen(t: torch.Tensor, k: int, dim: int) -> torch.Tensor:
    """``t`` with ``k`` zero slices before it along ``dim`` (the gradient slots of frozen ranks)."""
    if k == 0:
        return t
    shape = list(t.shape)
    shape[dim] = k
    return torch.cat([t.new_zeros(shape), t], dim)


def adapter_linear_reference(
    x: torch.Tensor, A: torch.Tensor, B: torch.Tensor, gate: torch.Tensor | None = None, *,
    weight: torch.Tensor | None = None, bias: torch.Tensor | None = None, act: str = "identity",
    down_bias: torch.Tensor | None = None, up_bias: torch.Tensor | None = None, frozen_ranks: int = 0,
) -> torch.Tensor:  # fmt: skip
    """The op in the input's dtype with standard PyTorch kernels (a handful of calls: linear, addmm, mul, addmm).
    ``frozen_ranks``: the first ranks get no gradient work (:func:`split_ranks`)."""
    check_args(x, A, B, weight, act)
    if frozen_ranks:
        (Af, Bf, gf, bdf), (At, Bt, gt, bdt) = split_ranks(A, B, gate, down_bias, frozen_ranks)
        y = adapter_linear_reference(x, Af, Bf, gf, weight=weight, bias=bias, act=act, down_bias=bdf, up_bias=up_bias)
        return y if At.shape[1] == 0 else y + adapter_linear_reference(x, At, Bt, gt, act=act, down_bias=bdt)
    rank, d_out = B.shape
    g, rows = gate_layout(x.shape, gate, rank)
    x2 = x.reshape(-1, x.shape[-1])
    h = x2 @ A if down_bias is None else torch.addmm(down_bias, x2, A)
    s = activation(h, act)
    if g is not None and g.shape[0] == 1 and s.shape[0] >= d_out:
        B = g.to(B.dtype).t() * B  # a shared gate scales B's rows when that is less work (R×d_out < N×R)
    elif g is not None and g.shape[0] == 1:
        s = s * g.to(s.dtype)
    elif g is not None:
        s = (s.view(-1, rows, rank) * g.to(s.dtype).unsqueeze(1)).view(-1, rank) if rows > 1 else s * g.to(s.dtype)
    if weight is None:
        y = s @ B if up_bias is None else torch.addmm(up_bias, s, B)
    else:
        # in place into the linear's fresh output (autograd-safe: addmm saves its inputs, not its output)
        y = F.linear(x2, weight, bias).addmm_(s, B)
        if up_bias is not None:
            y = y + up_bias
    return y.view(*x.shape[:-1], d_out)


def adapter_linear_loop(
    x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None,
    groups: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]], act: str = "identity",
) -> torch.Tensor:  # fmt: skip
    """The naive layer: the base linear, then one shrink/gate/expand/add per group (the benchmark's baseline).

    ``groups`` holds ``(A_g, B_g, gate_g)`` with ``gate_g`` shaped like a gate of :func:`adapter_linear_reference`.
    """
    y = F.linear(x, weight, bias) if weight is not None else 0
    for A, B, g in groups:
        y = y + adapter_linear_reference(x, A, B, g, act=act)
    return y
