"""The LMOs of sharded parameters: every rank holds rows [start, start + count) of dim 0 of the
direction M (FSDP2's `Shard(0)`, `torch.chunk` sizes, the last shards possibly empty) and gets the
same rows of the vertex v = LMO(M) that one process computes on the whole M (docs/distributed.md).

Two strategies per region:

* gather — all-gather M (each rank receives (w−1)/w of the tensor), run the region's own LMO on
  every rank (same input, same bits) and keep the local rows. Every region, the coupled and the
  warm-started spectral ones included.
* native — only what the vertex needs crosses the wire:
    L2      v = −τ·M/‖M‖₂: one scalar Σ M² (all-reduced with every other L2 region's);
    L∞      v = −τ·sign(M): nothing;
    top-k   (k-support, K-sparse, L1: k largest |M_i|, ties to the lowest global index) — the
            exact global k-th largest |M| by radix select: |M| ≥ 0 as integer bits is monotone, so
            8-bit digits are fixed from the top, one 256-bin histogram all-reduce per digit (4 for
            float32, 8 for float64), batched over every such tensor; then one all-reduce of the
            per-rank counts of entries equal to the k-th value (ties fill in rank order, which is
            global index order) and, for k-support, one of Σ over the kept M²;
    group   (k-support over filters = dim 0 = the shard dim): all-gather only the row norms ‖M_f‖²;
    spectral (spectral k-support, nuclear) on a tall matrix view, m × p with 2p < m: all-reduce
            the column Gram MᵀM = Σ_r M_rᵀM_r (p × p); its top-k eigenvectors V_k give the rows
            M_r V_k V_kᵀ of [M]_k.
  Regions without a native kernel (Lp, wide spectral, coupled, warm-started spectral) are gathered.

`cost` gives the bytes a rank receives per step for either strategy (ring all-reduce 2(w−1)/w·b,
all-gather (w−1)·b for b local bytes); "auto" picks the cheaper, per tensor.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor

from ..constraints import (GroupKSupportBall, KSparsePolytope, KSupportBall, L1Ball, L2Ball, LinfBall,
                           SpectralKSupportBall)
from ..constraints._ops import top_k_mask

#: bits of an 8-bit-digit radix select of |x| (sign bit excluded) per float dtype
_KEY = {torch.float32: (torch.int32, 31), torch.float64: (torch.int64, 63)}


@dataclass(frozen=True)
class Layout:
    """Where one rank's shard of a dim-0-sharded tensor lies: rows [start, start + count) of `shape`."""
    shape: torch.Size
    start: int
    count: int
    chunk: int          # rows of every shard but the last ones (torch.chunk): ceil(shape[0] / world)

    @property
    def row(self) -> int:
        return math.prod(self.shape[1:])


class Comm:
    """The collectives of a sharded step over one process group, counting the bytes each rank
    receives (`received`) and the calls (`calls`) by the ring model of the module docstring."""

    def __init__(self, group, rank: int, world: int):
        self.group, self.rank, self.world = group, rank, world
        self.received, self.calls = 0, 0

    def all_reduce(self, t: Tensor) -> Tensor:
        """Σ over ranks, in place (every rank gets the same bits)."""
        if self.world > 1:
            dist.all_reduce(t, group=self.group)
            self.received += 2 * (self.world - 1) * t.numel() * t.element_size() // self.world
            self.calls += 1
        return t

    def gather_rows(self, local: Tensor, layout: Layout) -> Tensor:
        """The whole tensor of `layout.shape` from every rank's rows (padded to `chunk` rows)."""
        if self.world == 1:
            return local
        padded = local.new_zeros((layout.chunk * self.world,) + tuple(layout.shape[1:]))
        parts = list(padded.chunk(self.world))
        parts[self.rank][:layout.count].copy_(local)
        dist.all_gather(parts, parts[self.rank].clone(), group=self.group)
        self.received += (self.world - 1) * parts[0].numel() * parts[0].element_size()
        self.calls += 1
        return padded[:layout.shape[0]]


def native_kind(region) -> str | None:
    """The native kernel of a region ("l2", "linf", "topk", "group") or None (gathered)."""
    kind = type(region)
    if kind is L2Ball:
        return "l2"
    if kind is LinfBall:
        return "linf"
    if kind in (KSupportBall, KSparsePolytope, L1Ball):
        return "topk"
    if kind is GroupKSupportBall:
        return "group"
    if issubclass(kind, SpectralKSupportBall) and 2 * (region.n // region.shape[0]) < region.shape[0]:
        return "spectral"
    return None


def cost(region, layouts: list[Layout], world: int, itemsize: int, native: bool) -> int:
    """Bytes one rank receives per step for this region's vertex (module docstring)."""
    ring = 2 * (world - 1) / world
    if not native:
        return sum((world - 1) * lay.chunk * lay.row * itemsize for lay in layouts)
    kind = native_kind(region)
    if kind == "l2":
        return int(8 * ring)
    if kind == "linf":
        return 0
    if kind == "topk":
        rounds = math.ceil(_KEY[torch.float64 if itemsize == 8 else torch.float32][1] / 8)
        return int((rounds * 256 * 8 + world * 8 + 8) * ring)
    if kind == "spectral":
        columns = region.n // region.shape[0]
        return int((columns * columns + 1) * 8 * ring)
    return (world - 1) * layouts[0].chunk * 8


def vertices(kind: str, comm: Comm, regions: list, ms: list[Tensor], layouts: list[Layout]) -> list[Tensor]:
    """The local rows of the vertices of `regions` (all of native `kind`) for local directions `ms`."""
    if kind == "l2":
        squares = comm.all_reduce(torch.stack([_square_sum(m) for m in ms]))
        return [_scaled(m, -r.radius, s) for r, m, s in zip(regions, ms, squares)]
    if kind == "linf":
        return [torch.sign(m) * -r.radius for r, m in zip(regions, ms)]
    if kind == "group":
        return _group_vertices(comm, regions, ms, layouts)
    if kind == "spectral":
        return [_spectral_vertex(comm, r, m) for r, m in zip(regions, ms)]
    masks = top_k_masks(comm, [m.abs().reshape(-1) for m in ms], [1 if type(r) is L1Ball else r.k for r in regions],
                        [r.n for r in regions])
    out: list[Tensor | None] = [None] * len(ms)
    support = [i for i, r in enumerate(regions) if type(r) is KSupportBall]
    kept = [torch.where(masks[i].view(ms[i].shape), ms[i], 0.0) for i in support]
    if support:
        squares = comm.all_reduce(torch.stack([_square_sum(m) for m in kept]))
        for i, m, s in zip(support, kept, squares):
            out[i] = _scaled(m, -regions[i].radius, s)
    for i, r in enumerate(regions):
        if out[i] is None:           # K-sparse and L1: −τ·sign(M) on the selection
            out[i] = torch.where(masks[i].view(ms[i].shape), torch.sign(ms[i]) * -r.radius, 0.0)
    return out


def _square_sum(t: Tensor) -> Tensor:
    """Σ t² (torch's cascade summation in t's dtype) as a 0-dim float64 tensor."""
    return (t * t).sum().double()


def _scaled(m: Tensor, numerator: float, square: Tensor) -> Tensor:
    """m · numerator / √square, and 0 where square is 0 (in m's dtype)."""
    factor = 0.0 if float(square) == 0 else numerator / math.sqrt(float(square))
    return m * torch.tensor(factor, dtype=torch.float64).to(m.dtype)


def _group_vertices(comm: Comm, regions: list, ms: list[Tensor], layouts: list[Layout]) -> list[Tensor]:
    """Group k-support: the filters' ‖M_f‖² of every tensor all-gathered in one call (padded to
    `chunk` rows each); S = the k largest (ties: lowest index); v_f = −τ·M_f/‖M_S‖ on S."""
    locals_ = [_row_squares(m) for m in ms]
    widths = [lay.chunk for lay in layouts]
    mine = torch.zeros(sum(widths), dtype=ms[0].dtype, device=ms[0].device)
    for part, rows in zip(mine.split(widths), locals_):
        part[:rows.numel()].copy_(rows)
    stacked = _all_gather_flat(comm, mine).view(comm.world, -1)
    out = []
    for j, (r, m, lay) in enumerate(zip(regions, ms, layouts)):
        start = sum(widths[:j])
        rows = stacked[:, start:start + widths[j]].reshape(-1)[:lay.shape[0]]
        keep = top_k_mask(rows, r.k)
        total = torch.where(keep, rows, 0.0).double().sum()
        local = keep[lay.start:lay.start + lay.count].to(m.dtype).view((-1,) + (1,) * (m.dim() - 1))
        out.append(_scaled(m * local, -r.radius, total))
    return out


def _spectral_vertex(comm: Comm, region, m: Tensor) -> Tensor:
    """Spectral k-support / nuclear LMO of a tall row-sharded M (m × p, 2p < m): the column Gram
    MᵀM = Σ_r M_rᵀM_r (p × p, float64) is all-reduced, V_k = its top-k eigenvectors (the top right
    singular vectors of M), [M]_k = M V_k V_kᵀ row by row, ‖[M]_k‖_F² = Σ_r ‖M_r V_k‖_F² (one more
    all-reduce); v_r = −τ·M_r V_k V_kᵀ / ‖[M]_k‖_F. The same Gram eigen-decomposition as one
    process's `best_rank_k` on the tall side (`constraints.topk_svd`), in float64."""
    rows = m.reshape(m.shape[0], -1).double()
    gram = comm.all_reduce(rows.mT @ rows)
    basis = torch.linalg.eigh(gram).eigenvectors[:, -region.k:]
    projected = rows @ basis
    square = comm.all_reduce((projected * projected).sum().reshape(1))[0]
    return _scaled((projected @ basis.mT).to(m.dtype).view(m.shape), -region.radius, square)


def _row_squares(m: Tensor) -> Tensor:
    """‖M_f‖² of the local filters in M's dtype (the single-process LMO ranks these same values)."""
    rows = m.reshape(m.shape[0], -1)
    return (rows * rows).sum(1)


def _all_gather_flat(comm: Comm, t: Tensor) -> Tensor:
    """The concatenation over ranks of equal-sized 1-D `t`."""
    if comm.world == 1:
        return t
    parts = [torch.empty_like(t) for _ in range(comm.world)]
    dist.all_gather(parts, t, group=comm.group)
    comm.received += (comm.world - 1) * t.numel() * t.element_size()
    comm.calls += 1
    return torch.cat(parts)


def top_k_masks(comm: Comm, values: list[Tensor], ks: list[int], sizes: list[int]) -> list[Tensor]:
    """Local masks of the global k largest entries of sharded 1-D `values` (≥ 0; each rank's part
    is a contiguous run of the global flat index, in rank order); ties go to the lowest global
    index, as `constraints._ops.top_k_mask` on the whole tensor (`sizes`: the global numbers of
    entries). Batched per dtype (module docstring)."""
    out: list[Tensor | None] = [None] * len(values)
    by_dtype: dict = {}
    for i, (v, k) in enumerate(zip(values, ks)):
        if k >= sizes[i]:
            out[i] = torch.ones_like(v, dtype=torch.bool)
        else:
            by_dtype.setdefault(v.dtype, []).append(i)
    for dtype, idx in by_dtype.items():
        for i, mask in zip(idx, _select(comm, [values[i] for i in idx], [ks[i] for i in idx], dtype)):
            out[i] = mask
    return out


def _select(comm: Comm, values: list[Tensor], ks: list[int], dtype: torch.dtype) -> list[Tensor]:
    """Radix select of the k-th largest of each sharded tensor, then the tie fill in rank order.
    The keys are views of the values' bits; each round keeps only the entries whose digits so far
    equal the k-th value's (after the first round a small fraction), so a select costs about two
    passes over the local entries."""
    int_dtype, bits = _KEY[dtype]
    keys = [v.contiguous().view(int_dtype) for v in values]
    candidates = list(keys)
    k = torch.tensor(ks, dtype=torch.int64)
    above = torch.zeros(len(keys), dtype=torch.int64)      # #{entries above the candidates}
    prefix = torch.zeros(len(keys), dtype=torch.int64)     # the digits fixed so far
    for shift in range(8 * ((bits - 1) // 8), -8, -8):
        digits = [((c >> shift) & 255).to(torch.uint8) for c in candidates]
        hist = torch.stack([torch.bincount(d, minlength=256) for d in digits])
        comm.all_reduce(hist)
        at_least = hist.flip(1).cumsum(1).flip(1)          # #{candidates with digit ≥ d}
        digit = ((above[:, None] + at_least) >= k[:, None]).sum(1) - 1
        above += at_least.gather(1, digit[:, None]).squeeze(1) - hist.gather(1, digit[:, None]).squeeze(1)
        prefix = (prefix << 8) | digit
        candidates = [c[d == digit[t]] for t, (c, d) in enumerate(zip(candidates, digits))]
    ties = torch.zeros(comm.world, len(keys), dtype=torch.int64)
    ties[comm.rank] = torch.tensor([c.numel() for c in candidates], dtype=torch.int64)   # = #{key == prefix}
    comm.all_reduce(ties)
    allowed = k - above - ties[:comm.rank].sum(0)          # ties this rank may keep (≤ 0: none)
    masks = []
    for t, (key, tied_here) in enumerate(zip(keys, ties[comm.rank].tolist())):
        threshold, room = prefix[t].to(key.dtype), int(allowed[t])
        if room >= tied_here:                              # every local tie is kept (the usual case)
            masks.append(key >= threshold)
        elif room <= 0:
            masks.append(key > threshold)
        else:
            tied = key == threshold
            masks.append((key > threshold) | (tied & (torch.cumsum(tied, 0) <= room)))
    return masks
