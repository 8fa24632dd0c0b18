"""The functional Stochastic Frank-Wolfe step (the kernel behind `sparsefw.SFW`).

For every parameter θ with direction g (its gradient) and region C (or None):

    m  = ρ·m_prev + (1−δ)·g          (m = g on the first step and when ρ = 0)
    v  = LMO_C(m) = argmin_{v∈C} <m, v>
    s  = 1 | 1/D | ‖m‖₂/‖θ−v‖₂ | ‖m‖₂/(D/2)     for rescale None | "diameter" | "gradient" | "fast_gradient"
    η  = clip(α·s, 0, 1)
    θ ← (1−η)·θ + η·v                 Frank-Wolfe gap G = <m, θ−v> ≥ 0

and for θ without a region the SGD-with-momentum step θ ← θ − α·m (the step length α‖m‖₂ that a
gradient-rescaled Frank-Wolfe step has). Everything except the LMO (one call per region; the
regions differ) runs as `torch._foreach_*` ops over all tensors at once; η stays on the device,
so a step never synchronises with it.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Sequence

import torch
from torch import Tensor

from ..constraints import Constraint

RESCALES = (None, "diameter", "gradient", "fast_gradient")


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


def _step_sizes(rescale: str | None, lrs: list[float], constraints: list[Constraint], directions: list[Tensor],
                differences: list[Tensor]) -> list[float] | list[Tensor]:
    """η = clip(α·s, 0, 1) for tensors sharing one rescale mode (floats, or 0-dim tensors on the device)."""
    if rescale is None:
        return [min(max(lr, 0.0), 1.0) for lr in lrs]
    if rescale == "diameter":
        return [min(max(lr / c.diameter, 0.0), 1.0) for lr, c in zip(lrs, constraints)]
    eta = list(torch._foreach_norm(directions))
    if rescale == "fast_gradient":
        torch._foreach_mul_(eta, [2.0 * lr / c.diameter for lr, c in zip(lrs, constraints)])
    else:  # "gradient": α‖m‖ / ‖θ−v‖, and 0/0 → 0 (θ = v then, any η leaves θ as it is)
        torch._foreach_mul_(eta, lrs)
        distance = torch._foreach_norm(differences)
        torch._foreach_clamp_min_(distance, [torch.finfo(d.dtype).tiny for d in distance])
        eta = torch._foreach_div(eta, distance)
    torch._foreach_clamp_min_(eta, 0.0)
    torch._foreach_clamp_max_(eta, 1.0)
    return eta


def sfw(params: list[Tensor], grads: list[Tensor], momentum_buffers: list[Tensor | None],
        constraints: Sequence[Constraint | None], *, lrs: Sequence[float], momentums: Sequence[float],
        dampenings: Sequence[float], rescales: Sequence[str | None]) -> list[Tensor | None]:
    """One SFW step over parallel lists (one entry per parameter, hyper-parameters per entry).

    Updates `params` in place and `momentum_buffers` (entries that are None are created where the
    momentum is non-zero). Returns the Frank-Wolfe gap <m, θ−v> as a 0-dim tensor for every
    constrained entry and None for the others.
    """
    directions = _update_momentum(grads, momentum_buffers, momentums, dampenings)

    free: dict[float, list[int]] = defaultdict(list)
    for i, c in enumerate(constraints):
        if c is None:
            free[lrs[i]].append(i)
    for lr, idx in free.items():
        torch._foreach_add_([params[i] for i in idx], [directions[i] for i in idx], alpha=-lr)

    gaps: list[Tensor | None] = [None] * len(params)
    by_mode: dict[str | None, list[int]] = defaultdict(list)
    for i, c in enumerate(constraints):
        if c is not None:
            by_mode[rescales[i]].append(i)
    for mode, idx in by_mode.items():
        theta, d, cs = [params[i] for i in idx], [directions[i] for i in idx], [constraints[i] for i in idx]
        vertices = [c.lmo(m) for c, m in zip(cs, d)]
        differences = torch._foreach_sub(theta, vertices)
        for i, m, diff in zip(idx, d, differences):  # no foreach dot product exists: one pass each
            gaps[i] = torch.vdot(m.reshape(-1), diff.reshape(-1))
        eta = _step_sizes(mode, [lrs[i] for i in idx], cs, d, differences)
        torch._foreach_lerp_(theta, vertices, eta)
    return gaps
