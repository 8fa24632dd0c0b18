"""`StepPlan`: the multi-tensor SFW step (the formulas of `functional`, batched).

Everything a step needs that depends only on the param groups — which tensors share a momentum
update, which regions share one batched LMO, the radii and rescale coefficients as device vectors —
is built once (`SFW` rebuilds it only when its param groups change). The entries are grouped by
device and dtype (torch's `_group_tensors_by_device_and_dtype`) into `_Bucket`s; a bucket's step is

1. the momentum of every entry, m = ρ·m + (1−δ)·g (one `_foreach` update per (ρ, δ); m = g at first);
2. the SGD-with-momentum step θ ← θ − α·m of the entries without a region (one per param group);
3. the Frank-Wolfe step of the single-tensor regions (`_FrankWolfe`), batch by batch:
   * regions with a closed form (`Constraint.frank_wolfe_terms`, e.g. every L2 ball whatever its
     shape) give Δ, ‖m‖, ‖Δ‖ and the gap from norms, without a vertex;
   * the other regions of one `batch_key` are solved as one stack (B, *shape) by one LMO (warm-started
     spectral ones under `spectral_refresh`), whose gaps and ‖Δ‖ are row reductions — for rows of
     ≥ `_LONG_ROWS` entries Δ is formed per tensor and the gaps are BLAS dots (no stacked θ);
   then one η vector (`step_size`) and θ ← θ − η·Δ for all of them;
4. the Frank-Wolfe step of each multi-tensor region (`_Joint`) on its packed members.

η, the gaps and the masks are vectors on the device in the math dtype; θ ← θ − η·Δ rounds once to
the parameter's dtype. Nothing reads a device value: on CUDA a step neither synchronises nor copies
from the host, given a device-side `ok`. A new way of stepping a kind of region (e.g. sharded
parameters) is one more batch class with `terms`, or one more bucket part beside `_Joint`.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor

from ..constraints import Constraint
from ..constraints.base import has_closed_form, lmo_stack
from .adam import adam_directions
from .rules import (_USES_NORM, by_device_and_dtype, coefficient, finite_vertices, is_multi_tensor, math_dtype,
                    step_size)

#: rows (entries per region) from which a batch's Δ and gaps are formed per tensor with BLAS dots
#: (no stacked copy of θ; a batched 1 × n by n × 1 bmm is 5× slower than dots there)
_LONG_ROWS = 4096


@dataclass
class Entry:
    """One parameter of a step: its region (None: SGD step), group and hyper-parameters. The
    members of a multi-tensor region are consecutive entries of one group sharing the region."""
    param: Tensor
    constraint: Constraint | None
    group: int
    momentum: float
    dampening: float
    rescale: str | None
    direction: str = "momentum"      # "adam": `adam.adam_directions` replaces the momentum


def _vector(values: list, dtype: torch.dtype, device: torch.device) -> Tensor:
    """A tensor of python values on `device` (plan building only; never inside a step)."""
    return torch.tensor(values, dtype=dtype).to(device)


def _stack(tensors: list[Tensor]) -> Tensor:
    return tensors[0].unsqueeze(0) if len(tensors) == 1 else torch.stack(tensors)


def _rate_flags(flags: list[bool], device: torch.device) -> bool | Tensor | None:
    """`step_size`'s uses_norm / uses_distance: True (all), None (none) or a bool vector."""
    return True if all(flags) else (_vector(flags, torch.bool, device) if any(flags) else None)


class StepPlan:
    """The structure of an SFW step over `entries` (see the module docstring). `spectral_refresh`:
    None for exact spectral LMOs; R for warm-started ones (`warm_lmo_rows`), exact every R-th step."""

    def __init__(self, entries: Sequence[Entry], spectral_refresh: int | None = None):
        self.entries = list(entries)
        self.size = len(self.entries)
        groups = by_device_and_dtype([e.param for e in self.entries])
        self.buckets = [_Bucket(self.entries, idx, device, dtype, spectral_refresh)
                        for (device, dtype), (_, idx) in groups.items()]
        #: plan position of every gap of `run`'s output (a multi-tensor region's: its first member's)
        self.gap_entries = [i for b in self.buckets for i in b.gap_entries]
        single = [e for e in self.entries if not is_multi_tensor(e.constraint)] or self.entries
        #: where the step's own device values (its non-finite mask) live
        self.device = single[0].param.device if single else torch.device("cpu")

    def run(self, grads: list[Tensor], buffers: list[Tensor | None], lrs: Sequence, *, ok: Tensor | None = None,
            states: list[dict] | None = None, vertex_flags: list[Tensor] | None = None) -> list[Tensor]:
        """One step over the plan's entries in place (`buffers` entries that are None are created
        where the momentum is non-zero). `lrs`: the learning rate of every entry (floats or 0-dim
        tensors; one value per param group). `ok`: None, or a 0-dim bool tensor on the device; where
        False the step changes nothing (weights and existing momentum buffers keep their values; a
        buffer created now is 0) and every gap is nan — a masked step that reads no device value. A
        batch of regions one of whose vertices is not finite (`finite_vertices`) masks the
        constrained single-tensor entries of its bucket (a multi-tensor region: itself) the same
        way after the momentum update; `vertex_flags` then receives a 0-dim bool per such check run
        on the device (False: masked). `states`: the entries' optimizer states (warm spectral bases).

        Returns 1-dim gap vectors (on their devices, math dtype), in the order of `gap_entries`.
        """
        flags = [] if vertex_flags is None else vertex_flags
        return [gap for b in self.buckets for gap in b.run(grads, buffers, lrs, ok, states, flags)]


class _Bucket:
    """The entries of one device and dtype, grouped for the step's multi-tensor ops."""

    def __init__(self, entries: list[Entry], idx: list[int], device: torch.device, dtype: torch.dtype,
                 refresh: int | None):
        self.device, self.dtype, self.entries = device, dtype, idx
        mine = [entries[i] for i in idx]
        self.params = [e.param for e in mine]
        self.everything = idx == list(range(len(entries)))
        momentum, free, single, joint = defaultdict(list), defaultdict(list), [], defaultdict(list)
        #: (local positions, β₁) of the entries with the "adam" direction
        self.adam = ([j for j, e in enumerate(mine) if e.direction == "adam"],
                     [e.momentum for e in mine if e.direction == "adam"])
        for j, e in enumerate(mine):
            if e.momentum != 0 and e.direction != "adam":
                momentum[(e.momentum, e.dampening)].append(j)
            if e.constraint is None:
                free[e.group].append(j)
            elif is_multi_tensor(e.constraint):
                joint[(e.group, id(e.constraint))].append(j)
            else:
                single.append(j)
        self.momentum_sets = dict(momentum)
        #: (ρ, δ) -> the momentum buffers of that set, once all exist
        self.buffers: dict[tuple[float, float], list[Tensor]] = {}
        self.free = list(free.values())
        self.frank_wolfe = _FrankWolfe(mine, idx, single, device, dtype, refresh) if single else None
        self.joints = [_Joint(mine, idx, local, dtype) for local in joint.values()]
        self.gap_entries = (self.frank_wolfe.gap_entries if single else []) + [j.entry for j in self.joints]

    def run(self, grads: list[Tensor], buffers: list[Tensor | None], lrs: Sequence, ok: Tensor | None,
            states: list[dict] | None, flags: list[Tensor]) -> list[Tensor]:
        g = grads if self.everything else [grads[i] for i in self.entries]
        if ok is not None:
            g = _zero_where_not(g, ok)
        directions = self._momentum(g, buffers, ok)
        if self.adam[0]:
            local, betas = self.adam
            mine = None if states is None else [states[self.entries[j]] for j in local]
            for j, d in zip(local, adam_directions([g[j] for j in local], mine, betas, ok)):
                directions[j] = d
        self._sgd(directions, lrs, ok)
        gaps = []
        if self.frank_wolfe is not None:
            if states is not None and not self.everything:
                states = [states[i] for i in self.entries]
            gaps.append(self.frank_wolfe.run(self.params, directions, lrs, ok, states, flags))
        gaps += [j.run(self.params, directions, lrs, ok, flags) for j in self.joints]
        return gaps

    def _momentum(self, g: list[Tensor], buffers: list[Tensor | None], ok: Tensor | None) -> list[Tensor]:
        """m = ρ·m + (1−δ)·g per (ρ, δ) set (m = g where the buffer is created now; ρ → 1 where `ok`
        is False, g being 0 there); returns every entry's direction (m, or g where ρ = 0)."""
        directions = list(g)
        for (rho, delta), local in self.momentum_sets.items():
            bufs = self.buffers.get((rho, delta))
            if bufs is None:                 # some buffer is created now (m = g): update the others
                bufs, gs = [], []
                for j in local:
                    i = self.entries[j]
                    if buffers[i] is None:
                        buffers[i] = torch.clone(g[j]).detach()
                    else:
                        bufs.append(buffers[i])
                        gs.append(g[j])
                self.buffers[(rho, delta)] = [buffers[self.entries[j]] for j in local]
            else:
                gs = [g[j] for j in local]
            if bufs:
                if ok is not None:
                    torch._foreach_mul_(bufs, torch.where(ok, rho, 1.0).to(self.dtype))
                    torch._foreach_add_(bufs, gs, alpha=1.0 - delta)
                elif delta == rho:           # EMA form in one pass: m + (1−ρ)(g − m)
                    torch._foreach_lerp_(bufs, gs, 1.0 - rho)
                else:
                    torch._foreach_mul_(bufs, rho)
                    torch._foreach_add_(bufs, gs, alpha=1.0 - delta)
            for j, buf in zip(local, self.buffers[(rho, delta)]):
                directions[j] = buf
        return directions

    def _sgd(self, directions: list[Tensor], lrs: Sequence, ok: Tensor | None) -> None:
        """θ ← θ − α·m for the entries without a region, one multi-tensor op per param group."""
        for local in self.free:
            lr = lrs[self.entries[local[0]]]
            ps, ds = [self.params[j] for j in local], [directions[j] for j in local]
            if ok is None and not isinstance(lr, Tensor):
                torch._foreach_add_(ps, ds, alpha=-lr)
            else:
                step = -lr if ok is None else torch.where(ok, -lr, 0.0)
                torch._foreach_add_(ps, torch._foreach_mul(ds, torch.as_tensor(step, device=self.device,
                                                                                   dtype=self.dtype)))


class _ClosedForm:
    """Regions of one class with `frank_wolfe_terms` (e.g. every L2 ball of the bucket)."""

    def __init__(self, kind: type, regions: list[Constraint], local: list[int], work: torch.dtype,
                 device: torch.device):
        self.kind, self.local = kind, local
        self.radii = _vector([r.radius for r in regions], work, device)
        self.constants = kind.frank_wolfe_constants(self.radii)

    def terms(self, params, directions, states, flags) -> tuple[Tensor, Tensor, Tensor, list[Tensor]]:
        theta, m = [params[j] for j in self.local], [directions[j] for j in self.local]
        if theta[0].dtype != self.radii.dtype:
            theta, m = [t.to(self.radii.dtype) for t in theta], [t.to(self.radii.dtype) for t in m]
        diff, norm, distance, gap = self.kind.frank_wolfe_terms(theta, m, self.radii, *self.constants)
        return norm, distance, gap, diff


class _Stacked:
    """Regions of one `batch_key` solved as one stack (B, *shape) by one LMO."""

    def __init__(self, kind: type, regions: list[Constraint], local: list[int], work: torch.dtype,
                 device: torch.device, refresh: int | None):
        self.kind, self.regions, self.local = kind, regions, local
        self.radii = _vector([r.radius for r in regions], work, device)
        self.refresh = refresh if refresh and hasattr(kind, "warm_lmo_rows") else None

    def terms(self, params, directions, states, flags) -> tuple[Tensor, Tensor, Tensor, list[Tensor]]:
        work = self.radii.dtype
        m = _stack([directions[j] for j in self.local]).to(work)
        if self.refresh and states is not None:
            v = self._warm_lmo(m, [states[j] for j in self.local])
        else:
            v = lmo_stack(self.kind, self.regions, m, self.radii)
        v = finite_vertices(v, flags)
        rows_m = m.reshape(m.shape[0], -1)
        norm = torch.linalg.vector_norm(rows_m, dim=1).to(work)
        if rows_m.shape[1] >= _LONG_ROWS:          # Δ per tensor (no stacked copy of θ), BLAS dots
            diff = torch._foreach_sub([params[j].to(v.dtype) for j in self.local], list(v.unbind(0)))
            distance = torch.stack(torch._foreach_norm(diff, 2, dtype=v.dtype)).to(work)
            gap = torch.stack([torch.dot(r, d.reshape(-1)) for r, d in zip(rows_m, diff)]).to(work)
            return norm, distance, gap, diff
        diff = _stack([params[j] for j in self.local]).to(v.dtype) - v
        rows_d = diff.reshape(diff.shape[0], -1)
        return (norm, torch.linalg.vector_norm(rows_d, dim=1).to(work), (rows_m * rows_d).sum(1).to(work),
                list(diff.unbind(0)))

    def _warm_lmo(self, m: Tensor, states: list[dict]) -> Tensor:
        """The warm-started spectral LMO; each region's basis and step count live in its parameter's
        optimizer state ("spectral_basis", a plain tensor; "spectral_steps", an int)."""
        steps = states[0].get("spectral_steps", 0)
        bases = [st.get("spectral_basis") for st in states]
        refresh = steps % self.refresh == 0 or any(u is None for u in bases)
        v, basis = self.regions[0].warm_lmo_rows(m, self.radii, None if refresh else _stack(bases))
        for st, u in zip(states, basis.unbind(0)):
            st["spectral_basis"], st["spectral_steps"] = u, steps + 1
        return v


class _FrankWolfe:
    """The single-tensor regions of a bucket: batches, then one η vector for all of them."""

    def __init__(self, entries: list[Entry], idx: list[int], single: list[int], device: torch.device,
                 dtype: torch.dtype, refresh: int | None):
        self.device, self.work = device, math_dtype(dtype)
        kinds: dict = defaultdict(list)
        for j in single:
            kinds[entries[j].constraint.batch_key()].append(j)
        self.batches = []
        for local in kinds.values():
            regions = [entries[j].constraint for j in local]
            kind = type(regions[0])
            self.batches.append(_ClosedForm(kind, regions, local, self.work, device) if has_closed_form(kind)
                                else _Stacked(kind, regions, local, self.work, device, refresh))
        order = [j for b in self.batches for j in b.local]
        constrained = [entries[j] for j in order]
        self.gap_entries = [idx[j] for j in order]
        self.coefficients = _vector([coefficient(e.rescale, e.constraint) for e in constrained], self.work, device)
        self.uses_norm = _rate_flags([e.rescale in _USES_NORM for e in constrained], device)
        self.uses_distance = _rate_flags([e.rescale == "gradient" for e in constrained], device)
        self.ones = torch.ones(len(constrained), dtype=self.work, device=device)

    def run(self, params: list[Tensor], directions: list[Tensor], lrs: Sequence, ok: Tensor | None,
            states: list[dict] | None, vertex_flags: list[Tensor]) -> Tensor:
        """The step of every single-tensor region of the bucket (`states`: the bucket's entries')."""
        flags: list[Tensor] = []
        parts = [b.terms(params, directions, states, flags) for b in self.batches]
        norm, distance, gap = (torch.cat(x) if len(x) > 1 else x[0] for x in zip(*[p[:3] for p in parts]))
        if flags:
            vertex_flags.append(torch.stack(flags).all())
            ok = vertex_flags[-1] if ok is None else ok & vertex_flags[-1]
        eta = step_size(self._learning_rates(lrs), self.coefficients, norm, distance, self.uses_norm,
                        self.uses_distance, ok)
        if ok is not None:
            gap = torch.where(ok, gap, torch.nan)
        steps = list((-eta).unbind(0))
        start = 0
        for batch, (*_, diff) in zip(self.batches, parts):
            # θ ← θ − η·Δ, computed in the math dtype, one rounding to θ's dtype
            torch._foreach_addcmul_([params[j] for j in batch.local], diff, steps[start:start + len(diff)])
            start += len(diff)
        return gap

    def _learning_rates(self, lrs: Sequence) -> Tensor | float:
        """α of every region: a python float when all are one float (no copy), else a device
        vector built without a host-to-device copy (tensor learning rates are stacked; floats enter
        as the scalar arguments of one multi-tensor multiply)."""
        values = [lrs[i] for i in self.gap_entries]
        first = values[0]
        if not isinstance(first, Tensor) and all(v == first and not isinstance(v, Tensor) for v in values):
            return float(first)
        if all(isinstance(v, Tensor) for v in values):
            return torch.stack([v.to(device=self.device, dtype=self.work).reshape(()) for v in values])
        out = self.ones.clone()
        torch._foreach_mul_(list(out.unbind(0)), [1.0 if isinstance(v, Tensor) else float(v) for v in values])
        tensors = [(i, v) for i, v in enumerate(values) if isinstance(v, Tensor)]
        if not tensors:
            return out
        index = torch.tensor([i for i, _ in tensors], device=self.device)
        return out.index_copy(0, index, torch.stack([v.to(device=self.device, dtype=self.work).reshape(())
                                                     for _, v in tensors]))


class _Joint:
    """One multi-tensor region (`pack`/`unpack`): the formulas applied to the packed members m, θ —
    v = LMO(m), Δ = θ − v, G = <m, Δ>, η = `step_size`, every member θ_p ← θ_p − η·Δ_p (in the
    math dtype, one rounding). A vertex that is not finite masks this region alone."""

    def __init__(self, entries: list[Entry], idx: list[int], local: list[int], dtype: torch.dtype):
        e = entries[local[0]]
        self.region, self.local, self.entry, self.work = e.constraint, local, idx[local[0]], math_dtype(dtype)
        self.coefficient = coefficient(e.rescale, e.constraint)
        self.uses_norm, self.uses_distance = e.rescale in _USES_NORM, e.rescale == "gradient"

    def run(self, params: list[Tensor], directions: list[Tensor], lrs: Sequence, ok: Tensor | None,
            vertex_flags: list[Tensor]) -> Tensor:
        region, members = self.region, [params[j] for j in self.local]
        m = region.pack([directions[j].to(self.work) for j in self.local])
        theta = region.pack([p.detach().to(self.work) for p in members])
        flags: list[Tensor] = []
        diff = theta - finite_vertices(region.lmo(m), flags)
        if flags:
            ok = flags[0] if ok is None else ok & flags[0]
            vertex_flags.extend(flags)
        gap = torch.dot(m, diff)
        eta = step_size(torch.as_tensor(lrs[self.entry], dtype=self.work, device=m.device).reshape(()),
                        self.coefficient, torch.linalg.vector_norm(m) if self.uses_norm else None,
                        torch.linalg.vector_norm(diff) if self.uses_distance else None, self.uses_norm,
                        self.uses_distance, ok)
        if ok is not None:
            gap = torch.where(ok, gap, torch.nan)
        for p, new in zip(members, region.unpack(theta - eta * diff)):
            p.copy_(new)
        return gap.reshape(1)


def _zero_where_not(tensors: list[Tensor], ok: Tensor) -> list[Tensor]:
    """The tensors with every entry set to 0 where `ok` is False (a masked step's gradients):
    one flat copy, so that nan·0 cannot leak, and views of it."""
    flat = torch.cat([t.reshape(-1) for t in tensors])
    flat.masked_fill_(~ok, 0)
    return [part.view(t.shape) for part, t in zip(flat.split([t.numel() for t in tensors]), tensors)]
