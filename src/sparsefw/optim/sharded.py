"""`ShardedPlan`: the SFW step on FSDP2 parameters (DTensors sharded on dim 0), exact — every rank
ends with its rows of the parameters one process computes on the same global batches
(docs/distributed.md).

The step works on local shards: gradients, momentum and θ are `to_local()` views (the momentum
buffers are kept in the optimizer state as `Shard(0)` DTensors, so that `torch.distributed.checkpoint`
saves and reshards them), and `SFW`'s formulas run on them unchanged (docs/method.md#the-sfw-step):

    m_r = ρ·m_r + (1−δ)·g_r                 (rank r's rows; nothing crosses the wire)
          or Adam's d_r (direction="adam": its moments are elementwise, kept as Shard(0) DTensors;
          the step count is the same on every rank)
    v_r = rows r of LMO(m)                  (`sharded_lmo`: gather or native, per region)
    Δ_r = θ_r − v_r;  one all-reduce of Σ_r (‖m_r‖², ‖Δ_r‖², <m_r, Δ_r>, #non-finite v_r) per step
    η   = step_size(α, ‖m‖, ‖Δ‖)            (the same bits on every rank)
    θ_r ← θ_r − η·Δ_r

Every host decision comes from an all-reduced value: the non-finite-gradient flag (one all-reduce
of a count, `finite_mask`), η, the vertex checks, the top-k thresholds and tie counts. (A DTensor
with a `Partial` placement gives its *local* value under float()/int()/bool(), so a decision made on
one would differ between ranks.) Plain tensors among the parameters are taken as replicated (each
rank holds all of them, with equal gradients). A multi-tensor region is gathered: its members'
channels are dim 0 of the writers but other dims of the readers.
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import torch
from torch import Tensor
try:
    from torch.distributed.tensor import DTensor, Shard
except ImportError:                      # a torch built without torch.distributed: nothing is sharded
    class DTensor:                       # noqa: D101 (never instantiated: isinstance is always False)
        pass
    Shard = None

from .adam import adam_directions
from .functional import _lmo, _momentum, _sgd
from .plan import Entry
from .rules import _USES_NORM, coefficient, finite_mask as _local_finite_mask, is_multi_tensor, math_dtype, step_size
from .sharded_lmo import Comm, Layout, cost, native_kind, vertices

#: values of `SFW(distributed_lmo=...)`
STRATEGIES = ("auto", "gather", "native")


def is_sharded(t) -> bool:
    """Whether `t` is a DTensor (an FSDP2 parameter, gradient or state)."""
    return isinstance(t, DTensor)


def local(t: Tensor) -> Tensor:
    """A DTensor's local shard (a view: writing it writes the DTensor); a plain tensor itself."""
    return t.to_local() if isinstance(t, DTensor) else t


def full_value(t: Tensor) -> Tensor:
    """The whole tensor (a DTensor all-gathered; a plain tensor itself): set-up checks only."""
    return t.full_tensor() if isinstance(t, DTensor) else t


def layout_of(p: Tensor, where: str) -> Layout | None:
    """The `Layout` of a DTensor parameter (None for a plain tensor); ValueError naming the
    parameter (`where`) unless it is sharded on dim 0 over a 1-D mesh, as `fully_shard` does."""
    if not isinstance(p, DTensor):
        return None
    mesh, placements = p.device_mesh, p.placements
    if mesh.ndim != 1 or len(placements) != 1 or placements[0] != Shard(0):
        raise ValueError(f"SFW: {where} is a DTensor with placements {tuple(placements)} on a {mesh.ndim}-D mesh; "
                         f"only Shard(0) on a 1-D mesh (torch.distributed.fsdp.fully_shard) is supported")
    world, rank, rows = mesh.size(), mesh.get_local_rank(), p.shape[0]
    chunk = -(-rows // world)
    start = min(rank * chunk, rows)
    count = max(0, min(rows - start, chunk))
    if p.to_local().shape[0] != count:
        raise ValueError(f"SFW: {where} has {p.to_local().shape[0]} local rows, expected {count} (torch.chunk "
                         f"sharding of {rows} rows over {world} ranks)")
    return Layout(p.shape, start, count, chunk)


def rebind(groups: list[dict], model: torch.nn.Module) -> list[dict]:
    """`groups` (of `sparsefw.constrain` on the model before `fully_shard`) with every parameter
    replaced by the model's parameter of the same name now: `fully_shard` registers new DTensor
    parameters. A group's "name" holds its parameters' names joined by "+"."""
    params = dict(model.named_parameters())
    out = []
    for group in groups:
        names = group["name"].split("+")
        if len(names) != len(group["params"]) or any(n not in params for n in names):
            raise ValueError(f"rebind: group {group['name']!r} does not name parameters of the model")
        out.append({**group, "params": [params[n] for n in names]})
    return out


class _Region:
    """One constrained region of the step: its plan positions, layouts and LMO strategy."""

    def __init__(self, region, positions: list[int], layouts: list[Layout | None], entry: Entry, strategy: str,
                 world: int, refresh: int | None):
        self.region, self.positions, self.layouts = region, positions, layouts
        self.work = math_dtype(entry.param.dtype)
        self.coefficient = coefficient(entry.rescale, region)
        self.uses_norm, self.uses_distance = entry.rescale in _USES_NORM, entry.rescale == "gradient"
        sharded = all(lay is not None for lay in layouts)
        kind = native_kind(region) if sharded and not is_multi_tensor(region) else None
        if kind == "spectral" and refresh:        # the warm-started LMO keeps a basis: gathered
            kind = None
        if kind is not None and strategy == "auto":
            size = torch.finfo(self.work).bits // 8
            kind = kind if cost(region, layouts, world, size, True) <= cost(region, layouts, world, size, False) else None
        #: "gather", "replicated" (plain tensors: the LMO on the local whole) or a native kernel
        self.kernel = kind if kind is not None and strategy != "gather" else "gather" if sharded else "replicated"
        if not sharded and any(lay is not None for lay in layouts):
            self.kernel = "gather"


class ShardedPlan:
    """The structure of an SFW step over `entries` some of whose parameters are FSDP2 DTensors
    (module docstring); `run` has `plan.StepPlan.run`'s signature, so `functional.sfw` runs it.
    `strategy`: "auto" | "gather" | "native" (`sharded_lmo`)."""

    def __init__(self, entries: Sequence[Entry], spectral_refresh: int | None, strategy: str,
                 names: Sequence[str] | None = None):
        self.entries, self.size, self.refresh = list(entries), len(entries), spectral_refresh
        names = names or [f"a parameter of param group {e.group}" for e in self.entries]
        self.layouts = [layout_of(e.param, where) for e, where in zip(self.entries, names)]
        meshes = {id(e.param.device_mesh): e.param.device_mesh for e in self.entries if is_sharded(e.param)}
        if len(meshes) != 1:
            raise ValueError(f"SFW: the DTensor parameters must share one device mesh, got {len(meshes)}")
        mesh = next(iter(meshes.values()))
        self.mesh, self.comm = mesh, Comm(mesh.get_group(), mesh.get_local_rank(), mesh.size())
        self.device = self.entries[0].param.device
        self.regions = self._regions(strategy)
        self.gap_entries = [r.positions[0] for r in self.regions]
        self.free = [i for i, e in enumerate(self.entries) if e.constraint is None]
        #: the entries with the "adam" direction (`_adam`)
        self.adam = [i for i, e in enumerate(self.entries) if e.direction == "adam"]

    def _regions(self, strategy: str) -> list[_Region]:
        out, i = [], 0
        while i < self.size:
            e = self.entries[i]
            if e.constraint is None:
                i += 1
                continue
            j = i + 1
            while is_multi_tensor(e.constraint) and j < self.size and self.entries[j].constraint is e.constraint:
                j += 1
            positions = list(range(i, j))
            out.append(_Region(e.constraint, positions, [self.layouts[p] for p in positions], e, strategy,
                               self.comm.world, self.refresh))
            i = j
        return out

    def finite_mask(self, grads: list[Tensor], device: torch.device, *, read: bool,
                    found_inf: Tensor | None = None) -> bool | Tensor:
        """`rules.finite_mask` over every rank's shards: one all-reduce of the count of ranks
        with a non-finite entry (a device flag; read only where `read`). Under GradScaler the
        count is of the ranks whose `found_inf` is set: the scaler's check of DTensor gradients
        is global already (DTensor reduces it), this makes the step's decision global whatever
        scaler computed the flag."""
        if found_inf is not None:
            ok = found_inf.to(device).reshape(()) == 0
        else:
            ok = _local_finite_mask([local(g) for g in grads], device, read=False)
        bad = self.comm.all_reduce((~ok).to(torch.int64).reshape(1))[0]
        return bool(bad == 0) if read else bad == 0

    def run(self, grads: list[Tensor], buffers: list[Tensor | None], lrs: Sequence, *, ok: Tensor | None = None,
            states: list[dict] | None = None, vertex_flags: list[Tensor] | None = None) -> list[Tensor]:
        """One step in place (`plan.StepPlan.run`); returns each region's gap as a 1-element tensor."""
        flags = [] if vertex_flags is None else vertex_flags
        directions = self._directions(grads, buffers, ok, states)
        for i in self.free:
            _sgd(local(self.entries[i].param), directions[i], lrs[i], ok)
        return self._frank_wolfe(directions, lrs, ok, states, flags)

    def _directions(self, grads: list[Tensor], buffers: list[Tensor | None], ok: Tensor | None,
                    states: list[dict] | None) -> list[Tensor]:
        """Every entry's direction on its local shard: m = ρ·m + (1−δ)·g (`functional._momentum`; a
        buffer created now is kept as a Shard(0) DTensor of the parameter's layout) or, for the
        "adam" entries, Adam's (`_adam`)."""
        locals_ = [None if b is None else local(b) for b in buffers]
        directions: list = [None] * self.size
        for i, (e, g) in enumerate(zip(self.entries, grads)):
            if e.direction == "adam":
                continue
            created = locals_[i] is None
            directions[i] = _momentum(local(g), locals_, i, e.momentum, e.dampening, ok)
            if created and locals_[i] is not None:
                buffers[i] = self._wrap(locals_[i], e.param)
        if self.adam:
            for i, d in zip(self.adam, self._adam(grads, states, ok)):
                directions[i] = d
        return directions

    def _adam(self, grads: list[Tensor], states: list[dict] | None, ok: Tensor | None) -> list[Tensor]:
        """`adam.adam_directions` of the "adam" entries on their local shards. Adam's moments are
        elementwise, so they shard like the parameter: they are kept as Shard(0) DTensors (which
        `torch.distributed.checkpoint` saves and reshards); the step count t is a plain 0-dim tensor,
        the same on every rank (every rank masks a step alike), so the bias corrections are one
        process's."""
        if states is None:
            raise ValueError("the 'adam' direction keeps its moments in the optimizer state: pass states")
        views, gs = [], []
        for i in self.adam:
            state, g = states[i], local(grads[i])
            gs.append(g)
            if "exp_avg" not in state:
                param = self.entries[i].param
                state["exp_avg"] = self._wrap(torch.zeros_like(g), param)
                state["exp_avg_sq"] = self._wrap(torch.zeros_like(g), param)
                state["step"] = torch.zeros((), dtype=torch.float32, device=g.device)
            views.append({"exp_avg": local(state["exp_avg"]), "exp_avg_sq": local(state["exp_avg_sq"]),
                          "step": state["step"]})
        out = adam_directions(gs, views, [self.entries[i].momentum for i in self.adam], ok)
        for i, view in zip(self.adam, views):
            states[i]["step"] = view["step"]
        return out

    def _wrap(self, t: Tensor, like: Tensor) -> Tensor:
        if not is_sharded(like):
            return t
        return DTensor.from_local(t, like.device_mesh, like.placements, run_check=False, shape=like.shape,
                                  stride=like.stride())

    def _frank_wolfe(self, directions: list[Tensor], lrs: Sequence, ok: Tensor | None, states, flags) -> list[Tensor]:
        ms = [[directions[p].to(r.work) for p in r.positions] for r in self.regions]
        vs = self._vertices(ms, states)
        diffs, sums = [], []
        for i, (r, m) in enumerate(zip(self.regions, ms)):
            v, vs[i] = vs[i], None           # each vertex is freed once its Δ is formed
            bad = [(~torch.isfinite(x)).sum().double() for x in v]
            v = [torch.where(torch.isfinite(x), x, 0.0) if b > 0 else x for x, b in zip(v, bad)]   # local only
            d = [local(self.entries[p].param).to(r.work) - x for p, x in zip(r.positions, v)]
            diffs.append(d)
            # a replicated (plain) member counts on rank 0 only: the all-reduce then gives its sums
            own = [lay is not None or self.comm.rank == 0 for lay in r.layouts]
            sums.append(torch.stack([_sums(a, b, c) * float(w) for a, b, c, w in zip(m, d, bad, own)]).sum(0))
        totals = self.comm.all_reduce(torch.stack(sums)) if sums else None
        gaps = []
        for r, d, t in zip(self.regions, diffs, totals if totals is not None else []):
            gaps.append(self._update(r, d, t, lrs, ok, flags))
        return gaps

    def _update(self, r: _Region, diff: list[Tensor], totals: Tensor, lrs: Sequence, ok: Tensor | None,
                flags: list[Tensor]) -> Tensor:
        """η from the all-reduced sums, θ_r ← θ_r − η·Δ_r; the region's gap (nan where masked)."""
        norm, distance = totals[0].sqrt().to(r.work), totals[1].sqrt().to(r.work)
        gap = totals[2].to(r.work)
        if totals[3] > 0:                            # a non-finite vertex: this region does not move
            flags.append(torch.tensor(False))
            ok = flags[-1] if ok is None else ok & flags[-1]
        lr = torch.as_tensor(lrs[r.positions[0]], dtype=r.work, device=self.device).reshape(())
        eta = step_size(lr, r.coefficient, norm, distance, r.uses_norm, r.uses_distance, ok)
        for p, d in zip(r.positions, diff):
            local(self.entries[p].param).addcmul_(d, -eta)
        return (gap if ok is None else torch.where(ok, gap, torch.nan)).reshape(1)

    def _vertices(self, ms: list[list[Tensor]], states) -> list[list[Tensor]]:
        """Every region's local vertex rows, the native kernels batched by (kernel, dtype)."""
        out: list = [None] * len(self.regions)
        batches: dict = defaultdict(list)
        for i, r in enumerate(self.regions):
            if r.kernel in ("gather", "replicated"):
                state = None if states is None or not self.refresh else states[r.positions[0]]
                out[i] = self._gathered(r, ms[i], state)
            else:
                batches[(r.kernel, r.work)].append(i)
        for (kernel, _), idx in batches.items():
            vs = vertices(kernel, self.comm, [self.regions[i].region for i in idx], [ms[i][0] for i in idx],
                          [self.regions[i].layouts[0] for i in idx])
            for i, v in zip(idx, vs):
                out[i] = [v]
        return out

    def _gathered(self, r: _Region, ms: list[Tensor], state: dict | None) -> list[Tensor]:
        """The region's own LMO on the whole direction (all-gathered), local rows kept."""
        full = [m if lay is None else self.comm.gather_rows(m, lay) for m, lay in zip(ms, r.layouts)]
        if is_multi_tensor(r.region):
            vs = r.region.unpack(r.region.lmo(r.region.pack(full)))
        else:
            vs = [_lmo(r.region, full[0], state, self.refresh)]
        return [v if lay is None else v[lay.start:lay.start + lay.count] for v, lay in zip(vs, r.layouts)]


def _sums(m: Tensor, d: Tensor, bad: Tensor) -> Tensor:
    """(‖m‖², ‖d‖², <m, d>, bad) as float64, summed in the math dtype by torch's cascade summation
    (relative error ~1e-7 in float32 on millions of entries, as `constraints._ops.l2`)."""
    return torch.cat([torch.stack([(m * m).sum(), (d * d).sum(), (m * d).sum()]).double(), bad.reshape(1)])


def traffic(optimizer) -> tuple[int, int]:
    """(bytes received, collective calls) by this rank in `optimizer`'s sharded steps so far."""
    comms = {id(p[0].comm): p[0].comm for p in getattr(optimizer, "_plans", {}).values()
             if isinstance(p[0], ShardedPlan)}
    return sum(c.received for c in comms.values()), sum(c.calls for c in comms.values())


__all__ = ["STRATEGIES", "ShardedPlan", "full_value", "is_sharded", "layout_of", "local", "rebind", "traffic"]
