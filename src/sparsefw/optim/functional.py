"""The functional Stochastic Frank-Wolfe step (the kernel behind `sparsefw.SFW`).

For every parameter θ with direction g (its gradient) and region C (or None):

    m  = ρ·m_prev + (1−δ)·g          (m = g on the first step and when ρ = 0)
    v  = LMO_C(m) = argmin_{v∈C} <m, v>
    s  = 1 | 1/D | ‖m‖₂/‖θ−v‖₂ | ‖m‖₂/(D/2)     for rescale None | "diameter" | "gradient" | "fast_gradient"
    η  = clip(α·s, 0, 1)
    θ ← θ − η·(θ − v) = (1−η)·θ + η·v   Frank-Wolfe gap G = <m, θ−v> ≥ 0

and for θ without a region the SGD-with-momentum step θ ← θ − α·m (the step length α‖m‖₂ that a
gradient-rescaled Frank-Wolfe step has).

Everything a step needs that depends only on the param groups — which tensors share a momentum
update, which regions share one batched LMO, the radii and rescale coefficients as device vectors —
is a `StepPlan`, built once (`SFW` rebuilds it only when its param groups change). A step then costs
a fixed number of multi-tensor (`torch._foreach_*`) ops plus one batched LMO per kind of region:

* L2 balls (every tensor of "l2" mode, the biases and BN parameters of the other modes) need no
  vertex: with c = τ/‖m‖, v = −c·m and Δ = θ − v = θ + c·m, and from the three norms ‖m‖, ‖θ‖, ‖Δ‖
  the gap is G = <m, Δ> = ‖m‖·(‖Δ‖² − ‖θ‖² + τ²)/(2τ) (expand ‖Δ‖²) — no dot product per tensor;
* the other regions of one kind and shape are solved as one stack (B, *shape), whose gap and ‖Δ‖
  are two row reductions;
* η, the gaps and the masks are vectors on the device, computed in float32 (float64 for float64
  parameters) whatever the parameter dtype; the update θ ← θ − η·Δ rounds once to the parameter's
  dtype, so a half/bfloat16 parameter's small step is not rounded away before it is applied.

Nothing reads a device value: on CUDA a step neither synchronises nor copies from the host, given a
device-side `found_inf` (GradScaler's, or the plan's own check, see `StepPlan.run`).
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Sequence

import torch
from torch import Tensor

from ..constraints import Constraint, L2Ball
from ..constraints.base import lmo_stack

RESCALES = (None, "diameter", "gradient", "fast_gradient")
#: rows (entries per region) from which a batch's Δ and gaps are formed per tensor with BLAS dots
#: (no stacked copy of θ; a batched 1 × n by n × 1 bmm is 5× slower than dots there)
_LONG_ROWS = 4096
#: rescale modes whose s has the factor ‖m‖, and the one divided by ‖θ−v‖
_USES_NORM = ("gradient", "fast_gradient")


def math_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype of step sizes and gaps for parameters of `dtype`: float64 stays, the rest float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _coefficient(rescale: str | None, constraint: Constraint) -> float:
    """α·s = α · coefficient · (‖m‖ if rescale uses it) / (‖θ−v‖ if rescale == "gradient")."""
    return {None: 1.0, "diameter": 1.0 / constraint.diameter, "fast_gradient": 2.0 / constraint.diameter,
            "gradient": 1.0}[rescale]


def step_size(lr: Tensor | float, coefficient: Tensor | float, norm: Tensor | None, distance: Tensor | None,
              uses_norm: bool | Tensor | None, uses_distance: bool | Tensor | None,
              ok: Tensor | None = None) -> Tensor:
    """η = clip(α · coefficient · (‖m‖ if uses_norm) / (‖θ−v‖ if uses_distance), 0, 1), and 0 where
    `ok` is False; the one formula of every SFW step (`StepPlan`, `joint.joint_step`).

    `lr` (α), `coefficient` (`_coefficient`), `norm`, `distance`: 0-dim or per-entry tensors in the
    math dtype (`lr` or `coefficient` may be a python float, not both); `uses_norm` /
    `uses_distance`: True (every entry), False or None (none; then `norm` / `distance` may be None)
    or a per-entry bool vector. A distance 0 (θ = v, where every η
    leaves θ as it is) is replaced by the smallest normal number.
    """
    eta = lr * coefficient
    if uses_norm is True:
        eta = eta * norm
    elif isinstance(uses_norm, Tensor):
        eta = eta * torch.where(uses_norm, norm, 1.0)
    if uses_distance is True or isinstance(uses_distance, Tensor):
        d = distance.clamp_min(torch.finfo(distance.dtype).tiny)
        eta = eta / (d if uses_distance is True else torch.where(uses_distance, d, 1.0))
    eta = eta.clamp(0.0, 1.0)
    return eta if ok is None else torch.where(ok, eta, 0.0)


@dataclass
class Entry:
    """One parameter of a step: its region (None: SGD step), group and hyper-parameters."""
    param: Tensor
    constraint: Constraint | None
    group: int
    momentum: float
    dampening: float
    rescale: str | None


@dataclass
class _Batch:
    """Regions solved together: one `lmo_stack` over the stack of their directions."""
    kind: type
    regions: list[Constraint]
    local: list[int]            # positions in the bucket's lists
    radii: Tensor               # (B,) in the LMO's working dtype, on the device


@dataclass
class _Bucket:
    """The entries of one device and dtype, grouped for the step's multi-tensor ops."""
    device: torch.device
    dtype: torch.dtype
    entries: list[int]                              # positions in the plan's entry list
    momentum_sets: dict[tuple[float, float], list[int]]
    free: dict[int, list[int]]                      # group index -> local positions (SGD step)
    l2: list[int]                                   # L2 balls (closed form)
    batches: list[_Batch]
    order: list[int] = field(default_factory=list)  # constrained local positions: l2, then batches
    groups: list[int] = field(default_factory=list)  # group index of every constrained entry, in order
    coefficients: Tensor | None = None              # (E,) rescale coefficient, math dtype
    l2_radii: Tensor | None = None                  # (L,) math dtype, and τ², 1/(2τ)
    l2_radii_squared: Tensor | None = None
    l2_half_inverse: Tensor | None = None
    l2_norm_dtype: torch.dtype = torch.float32      # accumulation dtype of the L2 balls' ‖m‖
    uses_norm: Tensor | None = None                 # (E,) bool, None if all or none
    uses_distance: Tensor | None = None             # (E,) bool, None if all or none
    all_norm: bool = False
    all_distance: bool = False
    ones: Tensor | None = None                      # (E,) for per-entry learning rates
    params: list[Tensor] = field(default_factory=list)
    everything: bool = False                        # the bucket holds every entry, in order
    buffers: dict = field(default_factory=dict)     # (ρ, δ) -> momentum buffers, once all exist


def _vector(values: list, dtype: torch.dtype, device: torch.device) -> Tensor:
    """A tensor of python values on `device` (plan building only; never inside a step)."""
    return torch.tensor(values, dtype=dtype).to(device)


class StepPlan:
    """The structure of an SFW step over `entries` (see the module docstring)."""

    def __init__(self, entries: Sequence[Entry], spectral_refresh: int | None = None):
        self.entries = list(entries)
        #: None: exact spectral LMOs; R: warm-started ones (`warm_lmo_rows`), exact every R-th step
        self.spectral_refresh = spectral_refresh
        self.size = len(self.entries)
        by_device: dict[tuple, list[int]] = defaultdict(list)
        for i, e in enumerate(self.entries):
            by_device[(e.param.device, e.param.dtype)].append(i)
        self.buckets = [self._bucket(device, dtype, idx) for (device, dtype), idx in by_device.items()]
        #: group index of every gap of `run`'s output vector, bucket by bucket
        self.gap_groups = [g for b in self.buckets for g in b.groups]

    def _bucket(self, device: torch.device, dtype: torch.dtype, idx: list[int]) -> _Bucket:
        entries = [self.entries[i] for i in idx]
        momentum_sets: dict[tuple[float, float], list[int]] = defaultdict(list)
        free: dict[int, list[int]] = defaultdict(list)
        l2, kinds = [], defaultdict(list)
        for j, e in enumerate(entries):
            if e.momentum != 0:
                momentum_sets[(e.momentum, e.dampening)].append(j)
            if e.constraint is None:
                free[e.group].append(j)
            elif type(e.constraint) is L2Ball:
                l2.append(j)
            else:
                kinds[e.constraint.batch_key()].append(j)
        work = math_dtype(dtype)
        lmo_work = torch.float64 if dtype == torch.float64 else torch.float32
        batches = [_Batch(type(entries[loc[0]].constraint), [entries[j].constraint for j in loc], loc,
                          _vector([entries[j].constraint.radius for j in loc], lmo_work, device))
                   for loc in kinds.values()]
        bucket = _Bucket(device, dtype, idx, dict(momentum_sets), dict(free), l2, batches)
        bucket.order = l2 + [j for b in batches for j in b.local]
        bucket.params = [e.param for e in entries]
        bucket.everything = idx == list(range(len(self.entries)))
        if not bucket.order:
            return bucket
        constrained = [entries[j] for j in bucket.order]
        bucket.groups = [e.group for e in constrained]
        bucket.coefficients = _vector([_coefficient(e.rescale, e.constraint) for e in constrained], work, device)
        radii = [entries[j].constraint.radius for j in l2]
        bucket.l2_radii = _vector(radii, work, device)
        bucket.l2_radii_squared = bucket.l2_radii * bucket.l2_radii
        bucket.l2_half_inverse = 0.5 / bucket.l2_radii
        # ‖m‖ accumulated in float64: in float32 it is off by ~1e-5 relative at 1M entries, and squares
        # of tiny directions underflow; either would put v = −τ·m/‖m‖ outside the ball
        bucket.l2_norm_dtype = torch.float64
        norm = [e.rescale in _USES_NORM for e in constrained]
        distance = [e.rescale == "gradient" for e in constrained]
        bucket.all_norm, bucket.all_distance = all(norm), all(distance)
        if any(norm) and not all(norm):
            bucket.uses_norm = _vector(norm, torch.bool, device)
        if any(distance) and not all(distance):
            bucket.uses_distance = _vector(distance, torch.bool, device)
        bucket.ones = torch.ones(len(constrained), dtype=work, device=device)
        return bucket

    # ------------------------------------------------------------------------------------------
    def run(self, grads: list[Tensor], buffers: list[Tensor | None], lrs: list, *,
            ok: Tensor | None = None, states: list[dict] | None = None) -> list[Tensor]:
        """One step over the plan's entries in place (`buffers` entries that are None are created
        where the momentum is non-zero). `lrs`: the learning rate of every param group (floats or
        0-dim tensors). `ok`: None, or a 0-dim bool tensor on the device; where False the step
        changes nothing (weights and existing momentum buffers keep their values; a buffer created
        now is 0) and every gap is nan — a masked step that reads no device value. A bucket one of
        whose vertices is not finite (`_finite_vertices`) is masked the same way after its momentum
        update; `vertex_flags` then holds a 0-dim bool per such bucket (False: masked).

        Returns one gap vector per bucket (on its device, math dtype; order: `gap_groups`).
        """
        gaps = []
        #: per bucket that checked its vertices on the device: whether all were finite
        self.vertex_flags: list[Tensor] = []
        for bucket in self.buckets:
            gaps.append(self._run_bucket(bucket, grads, buffers, lrs, ok, states))
        return gaps

    def _run_bucket(self, b: _Bucket, grads: list[Tensor], buffers: list[Tensor | None], lrs: list,
                    ok: Tensor | None, states: list[dict] | None) -> Tensor | None:
        params = b.params
        g = grads if b.everything else [grads[i] for i in b.entries]
        if ok is not None:
            g = _zero_where_not(g, ok)
        directions = list(g)
        for (rho, delta), local in b.momentum_sets.items():
            bufs = b.buffers.get((rho, delta))
            if bufs is None:                 # some buffer is created now (m = g): update the others
                bufs, gs = [], []
                for j in local:
                    i = b.entries[j]
                    if buffers[i] is None:
                        buffers[i] = torch.clone(g[j]).detach()
                    else:
                        bufs.append(buffers[i])
                        gs.append(g[j])
                b.buffers[(rho, delta)] = [buffers[b.entries[j]] for j in local]
            else:
                gs = [g[j] for j in local]
            if bufs:
                if ok is not None:       # ρ where the step counts, 1 where it is masked (g is 0 there)
                    torch._foreach_mul_(bufs, torch.where(ok, rho, 1.0).to(b.dtype))
                    torch._foreach_add_(bufs, gs, alpha=1.0 - delta)
                elif delta == rho:       # EMA form in one pass: m + (1−ρ)(g − m)
                    torch._foreach_lerp_(bufs, gs, 1.0 - rho)
                else:
                    torch._foreach_mul_(bufs, rho)
                    torch._foreach_add_(bufs, gs, alpha=1.0 - delta)
            for j, buf in zip(local, b.buffers[(rho, delta)]):
                directions[j] = buf
        for group, local in b.free.items():
            lr = lrs[group]
            ps, ds = [params[j] for j in local], [directions[j] for j in local]
            if ok is None and not isinstance(lr, Tensor):
                torch._foreach_add_(ps, ds, alpha=-lr)
            else:
                step = -lr if ok is None else torch.where(ok, -lr, 0.0)
                torch._foreach_add_(ps, torch._foreach_mul(ds, torch.as_tensor(step, device=b.device,
                                                                                   dtype=b.dtype)))
        if not b.order:
            return None
        return self._frank_wolfe(b, params, directions, lrs, ok, states)

    def _frank_wolfe(self, b: _Bucket, params: list[Tensor], directions: list[Tensor], lrs: list,
                     ok: Tensor | None, states: list[dict] | None) -> Tensor:
        work = math_dtype(b.dtype)
        low = work != b.dtype
        norms, distances, gap_parts, updates = [], [], [], []
        if b.l2:
            theta = [params[j] for j in b.l2]
            m = [directions[j] for j in b.l2]
            if low:
                theta, m = [t.to(work) for t in theta], [t.to(work) for t in m]
            norm_m = _stacked_norms(m, b.l2_norm_dtype)
            # c = τ/‖m‖ (0 for m = 0: v = 0); Δ = θ − v = θ + c·m
            # (at most the largest float: for ‖m‖ < τ/max float, v = −max·m lies inside the ball)
            scale = (b.l2_radii / norm_m).nan_to_num_(posinf=0.0).clamp_max_(torch.finfo(theta[0].dtype).max)
            diff = torch._foreach_addcmul(theta, m, list(scale.to(theta[0].dtype).unbind(0)))
            norm_t, norm_d = _stacked_norms(theta + list(diff), work).view(2, -1).unbind(0)
            norm_m = norm_m.to(work)
            norms.append(norm_m)
            distances.append(norm_d)
            gap_parts.append(norm_m * ((norm_d * norm_d - norm_t * norm_t) + b.l2_radii_squared) * b.l2_half_inverse)
            updates.append(([params[j] for j in b.l2], diff))
        flags: list[Tensor] = []
        for batch in b.batches:
            m = _stack([directions[j] for j in batch.local]).to(batch.radii.dtype)
            if self.spectral_refresh and states is not None and hasattr(batch.kind, "warm_lmo_rows"):
                v = self._warm_lmo(b, batch, m, [states[b.entries[j]] for j in batch.local])
            else:
                v = lmo_stack(batch.kind, batch.regions, m, batch.radii)
            v = _finite_vertices(v, flags)
            rows_m = m.reshape(m.shape[0], -1)
            # no temporaries: norms for the step size only, the gaps as dot products
            norms.append(torch.linalg.vector_norm(rows_m, dim=1).to(work))
            if rows_m.shape[1] >= _LONG_ROWS:      # Δ per tensor (no stacked copy of θ), BLAS dots
                theta = [params[j].to(v.dtype) for j in batch.local]
                diff = torch._foreach_sub(theta, list(v.unbind(0)))
                distances.append(_stacked_norms(diff, v.dtype).to(work))
                gap_parts.append(torch.stack([torch.dot(r, d.reshape(-1)) for r, d in zip(rows_m, diff)]).to(work))
                updates.append(([params[j] for j in batch.local], diff))
            else:
                diff = _stack([params[j] for j in batch.local]).to(v.dtype) - v
                rows_d = diff.reshape(diff.shape[0], -1)
                distances.append(torch.linalg.vector_norm(rows_d, dim=1).to(work))
                gap_parts.append((rows_m * rows_d).sum(1).to(work))
                updates.append(([params[j] for j in batch.local], list(diff.unbind(0))))
        norm, distance, gap = (torch.cat(x) if len(x) > 1 else x[0] for x in (norms, distances, gap_parts))
        if flags:
            self.vertex_flags.append(torch.stack(flags).all())
            ok = self.vertex_flags[-1] if ok is None else ok & self.vertex_flags[-1]
        eta = step_size(self._learning_rates(b, lrs, work), b.coefficients, norm, distance,
                        b.all_norm or b.uses_norm, b.all_distance or b.uses_distance, ok)
        if ok is not None:
            gap = torch.where(ok, gap, torch.nan)
        steps = list((-eta).unbind(0))
        start = 0
        for ps, diff in updates:
            # θ ← θ − η·Δ, computed in the math dtype, one rounding to θ's dtype
            torch._foreach_addcmul_(ps, diff, steps[start:start + len(ps)])
            start += len(ps)
        return gap

    def _warm_lmo(self, b: _Bucket, batch: _Batch, m: Tensor, states: list[dict]) -> Tensor:
        """The batch's warm-started spectral LMO; each region's basis and step count live in its
        parameter's optimizer state ("spectral_basis", a plain tensor; "spectral_steps", an int)."""
        steps = states[0].get("spectral_steps", 0)
        bases = [st.get("spectral_basis") for st in states]
        refresh = steps % self.spectral_refresh == 0 or any(u is None for u in bases)
        v, basis = batch.regions[0].warm_lmo_rows(m, batch.radii, None if refresh else _stack(bases))
        for st, u in zip(states, basis.unbind(0)):
            st["spectral_basis"], st["spectral_steps"] = u, steps + 1
        return v

    @staticmethod
    def _learning_rates(b: _Bucket, lrs: list, work: torch.dtype) -> Tensor | float:
        """α of every constrained entry: a python float when all are one float (no copy), else a
        device vector built without a host-to-device copy (tensor learning rates are stacked;
        floats enter as the scalar arguments of one multi-tensor multiply)."""
        values = [lrs[g] for g in b.groups]
        first = values[0]
        if not isinstance(first, Tensor) and all(v == first and not isinstance(v, Tensor) for v in values):
            return float(first)
        if all(isinstance(v, Tensor) for v in values):
            return torch.stack([v.to(device=b.device, dtype=work).reshape(()) for v in values])
        out = b.ones.clone()
        floats = [float(v) if not isinstance(v, Tensor) else 1.0 for v in values]
        torch._foreach_mul_(list(out.unbind(0)), floats)
        tensors = [(i, v) for i, v in enumerate(values) if isinstance(v, Tensor)]
        if tensors:
            index = torch.tensor([i for i, _ in tensors], device=b.device)
            out = out.index_copy(0, index, torch.stack([v.to(device=b.device, dtype=work).reshape(())
                                                        for _, v in tensors]))
        return out


def _stack(tensors: list[Tensor]) -> Tensor:
    return tensors[0].unsqueeze(0) if len(tensors) == 1 else torch.stack(tensors)


def _finite_vertices(v: Tensor, flags: list[Tensor]) -> Tensor:
    """v with its nan and ±inf entries set to 0, after appending to `flags` whether it had none (a
    0-dim bool on its device): the last line of defence of a step, whose LMOs return finite vertices
    for finite directions. On the CPU a v with a finite sum (one read) is returned as it is and
    nothing is appended; elsewhere the check runs on the device (nothing is read)."""
    if v.device.type == "cpu" and bool(torch.isfinite(v.sum())):
        return v
    finite = torch.isfinite(v)
    flags.append(finite.all())
    return torch.where(finite, v, 0.0)


def _stacked_norms(tensors: list[Tensor], dtype: torch.dtype) -> Tensor:
    return torch.stack(torch._foreach_norm(tensors, 2, dtype=dtype))


def _zero_where_not(tensors: list[Tensor], ok: Tensor) -> list[Tensor]:
    """The tensors with every entry set to 0 where `ok` is False (a masked step's gradients):
    one flat copy, so that nan·0 cannot leak, and views of it."""
    flat = torch.cat([t.reshape(-1) for t in tensors])
    flat.masked_fill_(~ok, 0)
    return [part.view(t.shape) for part, t in zip(flat.split([t.numel() for t in tensors]), tensors)]


def sfw(params: list[Tensor], grads: list[Tensor], momentum_buffers: list[Tensor | None],
        constraints: Sequence[Constraint | None], *, lrs: Sequence, momentums: Sequence[float],
        dampenings: Sequence[float], rescales: Sequence[str | None]) -> list[Tensor | None]:
    """One SFW step over parallel lists (one entry per parameter, hyper-parameters per entry).

    Updates `params` in place and `momentum_buffers` (entries that are None are created where the
    momentum is non-zero). Returns the Frank-Wolfe gap <m, θ−v> as a 0-dim tensor for every
    constrained entry and None for the others. Builds a `StepPlan` for this one call; `SFW` keeps
    its plan across steps.
    """
    entries = [Entry(p, c, i, rho, delta, r)
               for i, (p, c, rho, delta, r) in enumerate(zip(params, constraints, momentums, dampenings, rescales))]
    plan = StepPlan(entries)
    vectors = plan.run(list(grads), momentum_buffers, list(lrs))
    gaps: list[Tensor | None] = [None] * len(params)
    flat = [g for vec in vectors if vec is not None for g in vec.unbind(0)]
    for index, gap in zip(plan.gap_groups, flat):
        gaps[index] = gap
    return gaps
