"""The "adam" direction of a param group (`group["direction"]`; AdaSFW: Combettes, Spiegel & Pokutta
2020, diagonal Adam preconditioning of the SFW direction).

With β₁ the group's momentum, β₂ = `ADAM_BETA2`, ε = `ADAM_EPS` and t the parameter's step count:

    m = β₁·m + (1−β₁)·g,   u = β₂·u + (1−β₂)·g²,   d = (m / (1−β₁ᵗ)) / (√(u / (1−β₂ᵗ)) + ε)

d replaces the momentum m of the "momentum" direction (the group's dampening is not used): a group
without a region takes θ ← θ − α·d (Adam without weight decay: the constraint, where there is one,
is the regulariser), a group with a region v = LMO(d). State per parameter, plain tensors:
"exp_avg" (m), "exp_avg_sq" (u) and "step" (t, 0-dim float32: the key torch.optim's load_state_dict
does not cast to the parameter's dtype). Where `ok` is False (a masked step) m, u and t keep their
values and d is finite.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

DIRECTIONS = ("momentum", "adam")
ADAM_BETA2 = 0.999
ADAM_EPS = 1e-8


def adam_directions(grads: Sequence[Tensor], states: Sequence[dict] | None, betas: Sequence[float],
                    ok: Tensor | None = None) -> list[Tensor]:
    """d of every entry (module docstring), updating its state dict in place (created at the first call)."""
    if states is None:
        raise ValueError("the 'adam' direction keeps its moments in the optimizer state: pass states")
    out = []
    for g, state, beta in zip(grads, states, betas):
        if "exp_avg" not in state:
            state["exp_avg"], state["exp_avg_sq"] = torch.zeros_like(g), torch.zeros_like(g)
            state["step"] = torch.zeros((), dtype=torch.float32, device=g.device)
        m, u = state["exp_avg"], state["exp_avg_sq"]
        if ok is None:
            m.lerp_(g, 1.0 - beta)
            u.mul_(ADAM_BETA2).addcmul_(g, g, value=1.0 - ADAM_BETA2)
            state["step"] = state["step"] + 1
        else:
            m.copy_(torch.where(ok, m.lerp(g, 1.0 - beta), m))
            u.copy_(torch.where(ok, u * ADAM_BETA2 + (1.0 - ADAM_BETA2) * g * g, u))
            state["step"] = state["step"] + ok.to(torch.float32)
        t = state["step"].to(g.device, torch.float64)       # bias corrections in float64, as torch's Adam
        tiny = torch.finfo(torch.float32).tiny
        first = (1.0 - torch.pow(beta, t)).clamp_min(tiny).to(g.dtype)
        second = (1.0 - torch.pow(ADAM_BETA2, t)).clamp_min(tiny).to(g.dtype)
        out.append((m / first) / ((u / second).sqrt() + ADAM_EPS))
    return out
