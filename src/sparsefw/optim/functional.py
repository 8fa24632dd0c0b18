"""The functional Stochastic Frank-Wolfe step (the kernel behind `sparsefw.SFW`).

For every parameter θ with direction g (its gradient) and region C (or None):

    m  = ρ·m_prev + (1−δ)·g          (m = g on the first step and when ρ = 0)
    v  = LMO_C(m) = argmin_{v∈C} <m, v>
    s  = 1 | 1/D | ‖m‖₂/‖θ−v‖₂ | ‖m‖₂/(D/2)     for rescale None | "diameter" | "gradient" | "fast_gradient"
    η  = clip(α·s, 0, 1)
    θ ← (1−η)·θ + η·v                 Frank-Wolfe gap G = <m, θ−v> ≥ 0

and for θ without a region the SGD-with-momentum step θ ← θ − α·m (the step length α‖m‖₂ that a
gradient-rescaled Frank-Wolfe step has). The LMOs run batched over regions of the same kind
(`sparsefw.constraints.lmos`), everything else as `torch._foreach_*` ops over all tensors at once; η stays
on the device, so a step never synchronises with it.
"""
from __future__ import annotations

import functools
from collections import defaultdict
from typing import Sequence

import torch
from torch import Tensor

from ..constraints import Constraint
from ..constraints.batched import lmos

RESCALES = (None, "diameter", "gradient", "fast_gradient")


@functools.lru_cache(maxsize=None)
def smallest_normal(dtype: torch.dtype) -> float:
    return torch.finfo(dtype).tiny


def all_finite(tensors: Sequence[Tensor]) -> bool:
    """True iff no entry of any tensor is nan or ±inf.

    One read-only pass per (device, dtype): max|x| per tensor (`torch._foreach_norm` with ord=inf,
    which propagates nan and cannot overflow), then one host–device synchronisation to read the flag.
    """
    by_device: dict[tuple, list[Tensor]] = defaultdict(list)
    for t in tensors:
        by_device[(t.device, t.dtype)].append(t)
    return all(bool(torch.stack(torch._foreach_norm(ts, float("inf"))).isfinite().all()) for ts in by_device.values())


def _update_momentum(grads: list[Tensor], buffers: list[Tensor | None], momentums: Sequence[float],
                     dampenings: Sequence[float]) -> list[Tensor]:
    """m = ρ·m + (1−δ)·g in place (buffers created as m = g), grouped by (ρ, δ); returns the directions."""
    directions = list(grads)
    pending: dict[tuple[float, float], list[int]] = defaultdict(list)
    for i, (g, rho) in enumerate(zip(grads, momentums)):
        if rho == 0:
            continue
        if buffers[i] is None:
            buffers[i] = torch.clone(g).detach()
        else:
            pending[(rho, dampenings[i])].append(i)
        directions[i] = buffers[i]
    for (rho, delta), idx in pending.items():
        bufs, gs = [buffers[i] for i in idx], [grads[i] for i in idx]
        if delta == rho:  # EMA form in one pass: m + (1−ρ)(g − m)
            torch._foreach_lerp_(bufs, gs, 1.0 - rho)
        else:
            torch._foreach_mul_(bufs, rho)
            torch._foreach_add_(bufs, gs, alpha=1.0 - delta)
    return directions


def _vector(values: list[float], like: Tensor) -> Tensor:
    """A 1-D tensor of python floats on like's device, copied without waiting for the device."""
    return torch.tensor(values, dtype=like.dtype).to(like.device, non_blocking=True)


def _step_sizes(rescales: list[str | None], lrs: list[float], constraints: list[Constraint],
                directions: list[Tensor], differences: list[Tensor]) -> Tensor:
    """η = clip(α·s, 0, 1) for every entry (one device and dtype), as a vector on the device.

    α·s = coefficient · numerator / denominator with coefficient α, α/D, 2α/D, α and numerator
    1, 1, ‖m‖, ‖m‖ and denominator 1, 1, 1, ‖θ−v‖ for None, "diameter", "fast_gradient", "gradient";
    a zero ‖θ−v‖ (θ = v, where any η leaves θ as it is) is raised to the smallest normal number.
    """
    scale = {None: lambda c: 1.0, "diameter": lambda c: 1.0 / c.diameter,
             "fast_gradient": lambda c: 2.0 / c.diameter, "gradient": lambda c: 1.0}
    like = directions[0]
    eta = _vector([lr * scale[mode](c) for lr, mode, c in zip(lrs, rescales, constraints)], like)
    if any(mode in ("gradient", "fast_gradient") for mode in rescales):
        uses = _vector([mode in ("gradient", "fast_gradient") for mode in rescales], like) > 0
        eta = eta * torch.where(uses, torch.stack(torch._foreach_norm(directions)), 1.0)
    if "gradient" in rescales:
        uses = _vector([mode == "gradient" for mode in rescales], like) > 0
        distance = torch.stack(torch._foreach_norm(differences)).clamp_min(smallest_normal(like.dtype))
        eta = eta / torch.where(uses, distance, 1.0)
    return eta.clamp(0.0, 1.0)


def _sfw_one_device(params: list[Tensor], grads: list[Tensor], momentum_buffers: list[Tensor | None],
                    constraints: Sequence[Constraint | None], lrs: Sequence[float], momentums: Sequence[float],
                    dampenings: Sequence[float], rescales: Sequence[str | None]) -> list[Tensor | None]:
    """`sfw` for tensors that share one device and dtype."""
    directions = _update_momentum(grads, momentum_buffers, momentums, dampenings)

    free: dict[float, list[int]] = defaultdict(list)
    for i, c in enumerate(constraints):
        if c is None:
            free[lrs[i]].append(i)
    for lr, idx in free.items():
        torch._foreach_add_([params[i] for i in idx], [directions[i] for i in idx], alpha=-lr)

    gaps: list[Tensor | None] = [None] * len(params)
    constrained = [i for i, c in enumerate(constraints) if c is not None]
    if not constrained:
        return gaps
    theta, d = [params[i] for i in constrained], [directions[i] for i in constrained]
    cs = [constraints[i] for i in constrained]
    vertices = lmos(cs, d)
    differences = torch._foreach_sub(theta, vertices)
    # no foreach dot product exists: one pass each
    gap_vector = torch.stack([torch.vdot(m.reshape(-1), diff.reshape(-1)) for m, diff in zip(d, differences)])
    for i, gap in zip(constrained, gap_vector.unbind()):
        gaps[i] = gap
    eta = _step_sizes([rescales[i] for i in constrained], [lrs[i] for i in constrained], cs, d, differences)
    torch._foreach_lerp_(theta, vertices, list(eta.unbind()))
    return gaps


def sfw(params: list[Tensor], grads: list[Tensor], momentum_buffers: list[Tensor | None],
        constraints: Sequence[Constraint | None], *, lrs: Sequence[float], momentums: Sequence[float],
        dampenings: Sequence[float], rescales: Sequence[str | None]) -> list[Tensor | None]:
    """One SFW step over parallel lists (one entry per parameter, hyper-parameters per entry).

    Updates `params` in place and `momentum_buffers` (entries that are None are created where the
    momentum is non-zero). Returns the Frank-Wolfe gap <m, θ−v> as a 0-dim tensor for every
    constrained entry and None for the others.
    """
    by_device: dict[tuple, list[int]] = defaultdict(list)
    for i, p in enumerate(params):
        by_device[(p.device, p.dtype)].append(i)
    gaps: list[Tensor | None] = [None] * len(params)
    for idx in by_device.values():
        buffers = [momentum_buffers[i] for i in idx]
        part = _sfw_one_device([params[i] for i in idx], [grads[i] for i in idx], buffers,
                               [constraints[i] for i in idx], [lrs[i] for i in idx], [momentums[i] for i in idx],
                               [dampenings[i] for i in idx], [rescales[i] for i in idx])
        for i, buffer, gap in zip(idx, buffers, part):
            momentum_buffers[i], gaps[i] = buffer, gap
    return gaps
