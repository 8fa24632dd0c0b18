"""The SFW step of a param group whose region spans several parameters (`multi_tensor` regions,
e.g. `CoupledGroupKSupportBall`): the formulas of `functional` applied to the packed vector.

Each member p keeps its own momentum buffer (m_p = ρ·m_p + (1−δ)·g_p, m_p = g_p at first); with
m, θ the packed members, v = LMO(m), Δ = θ − v, G = <m, Δ>, η = clip(α·s, 0, 1) with the step-size
rule s of `functional` (`step_size`), every member moves θ_p ← θ_p − η·Δ_p (in the math dtype, one
rounding). A member without a gradient has direction 0 there. `ok` (a 0-dim bool tensor, or None) masks the
step on the device as in `StepPlan.run`.
"""
from __future__ import annotations

import torch
from torch import Tensor

from .functional import _USES_NORM, _coefficient, _finite_vertices, math_dtype, step_size


def is_multi_tensor(constraint) -> bool:
    return bool(getattr(constraint, "multi_tensor", False))


def joint_step(group: dict, states: list[dict], ok: Tensor | None = None,
               vertex_flags: list[Tensor] | None = None) -> Tensor:
    """One SFW step of `group` (params, constraint, lr, momentum, dampening, rescale) in place;
    `states[i]` is the optimizer state of params[i]. Returns the gap (0-dim, math dtype). A vertex
    that is not finite masks the step as `ok` does (after the momentum update); whether it was
    finite is appended to `vertex_flags` where the check ran on the device (`_finite_vertices`)."""
    params, region = group["params"], group["constraint"]
    rho, delta, rescale = group["momentum"], group["dampening"], group["rescale"]
    work = math_dtype(params[0].dtype)
    directions = []
    for p, state in zip(params, states):
        g = torch.zeros_like(p) if p.grad is None else p.grad
        if ok is not None:
            g = torch.where(ok, g, 0)
        if rho == 0:
            directions.append(g)
            continue
        buf = state.get("momentum_buffer")
        if buf is None:
            buf = state["momentum_buffer"] = torch.clone(g).detach()
        else:
            buf.mul_(rho if ok is None else torch.where(ok, rho, 1.0).to(buf.dtype)).add_(g, alpha=1.0 - delta)
        directions.append(buf)
    m = region.pack([d.to(work) for d in directions])
    theta = region.pack([p.detach().to(work) for p in params])
    flags: list[Tensor] = []
    diff = theta - _finite_vertices(region.lmo(m), flags)
    if flags:
        ok = flags[0] if ok is None else ok & flags[0]
        if vertex_flags is not None:
            vertex_flags.extend(flags)
    gap = torch.dot(m, diff)
    uses_norm, uses_distance = rescale in _USES_NORM, rescale == "gradient"
    eta = step_size(torch.as_tensor(group["lr"], dtype=work, device=m.device).reshape(()),
                    _coefficient(rescale, region), torch.linalg.vector_norm(m) if uses_norm else None,
                    torch.linalg.vector_norm(diff) if uses_distance else None, uses_norm, uses_distance, ok)
    if ok is not None:
        gap = torch.where(ok, gap, torch.nan)
    for p, new in zip(params, region.unpack(theta - eta * diff)):
        p.copy_(new)
    return gap
