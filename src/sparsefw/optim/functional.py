"""The functional Stochastic Frank-Wolfe step `sfw` (the kernel behind `sparsefw.SFW`).

For every parameter θ with direction g (its gradient) and region C (or None):

    m  = ρ·m_prev + (1−δ)·g          (m = g on the first step and when ρ = 0)
    v  = LMO_C(m) = argmin_{v∈C} <m, v>
    s  = 1 | 1/D | ‖m‖₂/‖θ−v‖₂ | ‖m‖₂/(D/2)     for rescale None | "diameter" | "gradient" | "fast_gradient"
    η  = clip(α·s, 0, 1)
    θ ← θ − η·(θ − v) = (1−η)·θ + η·v   Frank-Wolfe gap G = <m, θ−v> ≥ 0

and for θ without a region the SGD-with-momentum step θ ← θ − α·m (the step length α‖m‖₂ that a
gradient-rescaled Frank-Wolfe step has). A region over several parameters (`multi_tensor`, e.g.
`CoupledGroupKSupportBall`) takes the step on its packed members (m, θ, v, Δ packed; each member
keeps its own momentum buffer).

`sfw` dispatches, as torch.optim.sgd does, to the single-tensor reference path (`foreach=False`:
one region at a time, the formulas as written; the tests' oracle) or to the planned multi-tensor
path (`plan.StepPlan`: a fixed number of `_foreach` ops and one batched LMO per kind of region).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ..constraints import Constraint
from .adam import adam_directions
from .plan import Entry, StepPlan
# RESCALES and step_size are re-exported: the step's public rules
from .rules import (_USES_NORM, RESCALES, coefficient, finite_vertices, is_multi_tensor, math_dtype,  # noqa: F401
                    step_size)


def sfw(params: list[Tensor], grads: list[Tensor], momentum_buffers: list[Tensor | None],
        constraints: Sequence[Constraint | None], *, lrs: Sequence, momentums: Sequence[float],
        dampenings: Sequence[float], rescales: Sequence[str | None], groups: Sequence[int] | None = None,
        ok: Tensor | None = None, states: list[dict] | None = None, spectral_refresh: int | None = None,
        vertex_flags: list[Tensor] | None = None, foreach: bool | None = None,
        plan: StepPlan | None = None, directions: Sequence[str] | None = None) -> Gaps:
    """One SFW step over parallel lists (one entry per parameter, hyper-parameters per entry).

    Updates `params` in place and `momentum_buffers` (entries that are None are created where the
    momentum is non-zero). The members of a multi-tensor region are consecutive entries with that
    region (and one group); their lr and rescale are the first member's.
    `groups`: each entry's param group (entries of one group share their lr; default: one group per
    entry). `ok`: None or a 0-dim bool tensor; where False nothing moves and the gaps are nan (see
    `StepPlan.run`, which also describes `states`, `spectral_refresh` and `vertex_flags`).
    `foreach=False`: the single-tensor reference path; otherwise the planned path, with `plan` (a
    `StepPlan` of these same entries, kept across steps by `SFW`) or one built for this call.
    `directions`: each entry's direction, "momentum" (default) or "adam" (`adam`; needs `states`).

    Returns `Gaps`: the Frank-Wolfe gap <m, θ−v> as a 0-dim tensor for every constrained entry (a
    multi-tensor region's on its first member) and None for the others.
    """
    args = (lrs, ok, states, vertex_flags)
    directions = ["momentum"] * len(params) if directions is None else list(directions)
    if foreach is False:
        if plan is not None:
            raise ValueError("sfw: a plan is the multi-tensor path; foreach=False takes none")
        return _single_tensor_sfw(params, grads, momentum_buffers, constraints, momentums, dampenings, rescales,
                                  spectral_refresh, directions, *args)
    if plan is None:
        groups = range(len(params)) if groups is None else groups
        plan = StepPlan([Entry(*entry) for entry in zip(params, constraints, groups, momentums, dampenings, rescales,
                                                        directions)], spectral_refresh)
    return _multi_tensor_sfw(plan, grads, momentum_buffers, *args)


class Gaps(Sequence):
    """A step's gap of every entry (None: no region), kept as `vectors` — 1-dim tensors on their
    devices whose values belong, in order, to the entries `entries` — and split only when read."""

    def __init__(self, size: int, vectors: list[Tensor], entries: list[int]):
        self.size, self.vectors, self.entries = size, vectors, entries
        self._items: list[Tensor | None] | None = None

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index):
        if self._items is None:
            self._items = [None] * self.size
            for entry, gap in zip(self.entries, (g for vec in self.vectors for g in vec.unbind(0))):
                self._items[entry] = gap
        return self._items[index]


def _multi_tensor_sfw(plan: StepPlan, grads: list[Tensor], momentum_buffers: list[Tensor | None], lrs: Sequence,
                      ok: Tensor | None, states: list[dict] | None, vertex_flags: list[Tensor] | None) -> Gaps:
    vectors = plan.run(grads, momentum_buffers, lrs, ok=ok, states=states, vertex_flags=vertex_flags)
    return Gaps(plan.size, vectors, plan.gap_entries)


def _single_tensor_sfw(params, grads, momentum_buffers, constraints, momentums, dampenings, rescales,
                       spectral_refresh, kinds, lrs, ok, states, vertex_flags) -> Gaps:
    """The reference path: region by region, the module docstring's formulas as written. A vertex
    that is not finite masks its own region (the planned path masks its batch's bucket)."""
    gaps: list[Tensor | None] = [None] * len(params)
    flags = [] if vertex_flags is None else vertex_flags
    for idx in _regions(constraints):
        first = idx[0]
        directions = [_momentum(grads[i], momentum_buffers, i, momentums[i], dampenings[i], ok)
                      if kinds[i] != "adam" else _adam(grads[i], states, i, momentums[i], ok) for i in idx]
        if constraints[first] is None:
            _sgd(params[first], directions[0], lrs[first], ok)
            continue
        state = None if states is None or not spectral_refresh else states[first]
        gaps[first] = _frank_wolfe(constraints[first], [params[i] for i in idx], directions, lrs[first],
                                   rescales[first], ok, state, spectral_refresh, flags)
    entries = [i for i, gap in enumerate(gaps) if gap is not None]
    return Gaps(len(params), [gaps[i].reshape(1) for i in entries], entries)


def _regions(constraints: Sequence[Constraint | None]) -> list[list[int]]:
    """Entry positions region by region: a multi-tensor region's consecutive members together."""
    out: list[list[int]] = []
    for i, c in enumerate(constraints):
        if out and c is not None and is_multi_tensor(c) and constraints[out[-1][0]] is c:
            out[-1].append(i)
        else:
            out.append([i])
    return out


def _momentum(g: Tensor, buffers: list[Tensor | None], i: int, rho: float, delta: float, ok: Tensor | None) -> Tensor:
    """m = ρ·m + (1−δ)·g (written in place; m = g when created; ρ → 1 and g → 0 where not `ok`)."""
    if ok is not None:
        g = torch.where(ok, g, 0)
    if rho == 0:
        return g
    if buffers[i] is None:
        buffers[i] = torch.clone(g).detach()
    elif ok is not None:
        buffers[i].mul_(torch.where(ok, rho, 1.0).to(g.dtype)).add_(g, alpha=1.0 - delta)
    elif delta == rho:
        buffers[i].lerp_(g, 1.0 - rho)
    else:
        buffers[i].mul_(rho).add_(g, alpha=1.0 - delta)
    return buffers[i]


def _adam(g: Tensor, states: list[dict] | None, i: int, beta: float, ok: Tensor | None) -> Tensor:
    """The "adam" direction of entry i (`adam.adam_directions`, which keeps the state where not `ok`)."""
    return adam_directions([g], None if states is None else [states[i]], [beta], ok)[0]


def _sgd(p: Tensor, m: Tensor, lr, ok: Tensor | None) -> None:
    """θ ← θ − α·m (α a float or 0-dim tensor; 0 where not `ok`)."""
    if ok is None and not isinstance(lr, Tensor):
        p.add_(m, alpha=-lr)
    else:
        step = -lr if ok is None else torch.where(ok, -lr, 0.0)
        p.add_(m * torch.as_tensor(step, device=p.device, dtype=p.dtype))


def _frank_wolfe(region: Constraint, params: list[Tensor], directions: list[Tensor], lr, rescale: str | None,
                 ok: Tensor | None, state: dict | None, refresh: int | None, flags: list[Tensor]) -> Tensor:
    """v = LMO(m), Δ = θ − v, G = <m, Δ>, η = `step_size`, θ ← θ − η·Δ in the math dtype, rounded
    once to θ's dtype; on the packed members for a multi-tensor region. Returns G (0-dim)."""
    work = math_dtype(params[0].dtype)
    joint = is_multi_tensor(region)
    m = region.pack([d.to(work) for d in directions]) if joint else directions[0].to(work)
    theta = region.pack([p.detach().to(work) for p in params]) if joint else params[0].detach().to(work)
    checked: list[Tensor] = []
    diff = theta - finite_vertices(_lmo(region, m, state, refresh), checked)
    if checked:
        flags.extend(checked)
        ok = checked[0] if ok is None else ok & checked[0]
    gap = (m * diff).sum()
    eta = step_size(torch.as_tensor(lr, dtype=work, device=m.device).reshape(()), coefficient(rescale, region),
                    torch.linalg.vector_norm(m), torch.linalg.vector_norm(diff), rescale in _USES_NORM,
                    rescale == "gradient", ok)
    if joint:                   # as the planned path: θ − η·Δ packed, copied to the members
        for p, new in zip(params, region.unpack(theta - eta * diff)):
            p.copy_(new)
    else:                       # θ + Δ·(−η) in one kernel (fused where the CPU has an FMA)
        params[0].addcmul_(diff, -eta)
    return gap if ok is None else torch.where(ok, gap, torch.nan)


def _lmo(region: Constraint, m: Tensor, state: dict | None, refresh: int | None) -> Tensor:
    """region.lmo(m), or its warm-started spectral LMO (basis and step count in `state`, exact
    every `refresh`-th step) where `state` is given and the region has one."""
    if state is None or not hasattr(region, "warm_lmo_rows"):
        return region.lmo(m)
    steps, basis = state.get("spectral_steps", 0), state.get("spectral_basis")
    fresh = steps % refresh == 0 or basis is None
    v, basis = region.warm_lmo_rows(m.unsqueeze(0), torch.tensor([region.radius], dtype=m.dtype, device=m.device),
                                    None if fresh else basis.unsqueeze(0))
    state["spectral_basis"], state["spectral_steps"] = basis[0], steps + 1
    return v[0]
