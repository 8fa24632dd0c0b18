"""The k-support ball over coupled channel groups spanning several tensors.

Members are tensors x_1 … x_M (shapes `shapes`); member m's channel c is its slice `indices[m][c]`
(a list of positions) along dim `dims[m]`, and every position of that dim belongs to exactly one
channel, so every entry of every member lies in exactly one group

    G_c = ∪_m {entries of x_m at positions indices[m][c] along dims[m]},   c = 0 … C−1.

With member weights w_m > 0 and the weighted group norms n_c(x) = √(Σ_m w_m² ‖x_m[G_c]‖₂²):

    C = {x : ‖(n_c(x))_c‖_(k) ≤ τ}     (‖·‖_(k) the k-support norm; k = 1 group-L1, k = C the
                                        weighted L2 ball over the concatenation)
    LMO     with d'_m = d_m / w_m: S = the k groups with the largest n'_c = √(Σ_m ‖d'_m[G_c]‖²);
            v_m = −τ · (d_m / w_m²) on S, 0 elsewhere, divided by √(Σ_{c∈S} n'_c²)
    dual    ‖top-k of (n'_c)_c‖₂;  diameter 2τ / min_m w_m

The region acts on the *packed* vector (every member flattened, concatenated in member order):
`shape` is (n,), and `pack`/`unpack` convert between the members and that vector. `SFW` steps a
param group holding the member parameters (in order) with such a region jointly. Plain data:
`to_spec` holds the shapes, dims, per-channel index lists, weights, k and τ.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch

from ._ops import k_support_norm, normalise_rows, safe_scale, top_k_l2, top_k_mask_rows, working
from .base import Constraint, check_positive, resolve_k


class CoupledGroupKSupportBall(Constraint):
    """k-support norm of the (weighted) joint norms of C channel groups spanning several tensors."""

    #: `SFW` steps a group of len(shapes) parameters with this region jointly (see `pack`)
    multi_tensor = True

    def __init__(self, shapes: Sequence[Sequence[int]], dims: Sequence[int], indices: Sequence,
                 k: int | float, radius: float, weights: Sequence[float] | None = None):
        if not shapes or len(shapes) != len(dims) or len(shapes) != len(indices):
            raise ValueError(f"shapes, dims and indices must be non-empty and of equal lengths, got "
                             f"{len(shapes)}, {len(dims)} and {len(indices)}")
        self.shapes = [torch.Size(int(s) for s in shape) for shape in shapes]
        self.dims = [int(d) for d in dims]
        self.indices = [[[int(i) for i in row] for row in member] for member in indices]
        self.weights = [1.0] * len(shapes) if weights is None else [
            check_positive(f"weights[{m}]", w) for m, w in enumerate(weights)]
        if len(self.weights) != len(self.shapes):
            raise ValueError(f"weights must have one entry per member, got {len(self.weights)} for "
                             f"{len(self.shapes)} members")
        super().__init__([sum(math.prod(s) for s in self.shapes)], radius)
        self.channels = len(self.indices[0])
        parts_group, parts_weight = [], []
        for m, (shape, dim, index, w) in enumerate(zip(self.shapes, self.dims, self.indices, self.weights)):
            if not 0 <= dim < len(shape):
                raise ValueError(f"dims[{m}]={dim} is not a dim of shape {tuple(shape)}")
            if len(index) != self.channels:
                raise ValueError(f"indices[{m}] has {len(index)} channels, expected {self.channels}")
            flat = [i for row in index for i in row]
            if sorted(flat) != list(range(shape[dim])):
                raise ValueError(f"indices[{m}] must partition the {shape[dim]} positions of dim {dim} "
                                 f"of member {m} (shape {tuple(shape)}) into {self.channels} channels")
            channel_of = torch.empty(shape[dim], dtype=torch.long)
            for c, row in enumerate(index):
                channel_of[row] = c
            view = [1] * len(shape)
            view[dim] = shape[dim]
            parts_group.append(channel_of.view(view).expand(shape).reshape(-1))
            parts_weight.append(torch.full((math.prod(shape),), w, dtype=torch.float64))
        #: channel of every packed entry, and its member's weight
        self.group_of = torch.cat(parts_group)
        self.entry_weight = torch.cat(parts_weight)
        self._k_given = k
        self.k = resolve_k(k, self.channels, "channels")

    # --- members <-> packed vector --------------------------------------------------------
    def pack(self, tensors: Sequence[torch.Tensor]) -> torch.Tensor:
        """The members flattened and concatenated (a new tensor)."""
        if len(tensors) != len(self.shapes) or any(t.shape != s for t, s in zip(tensors, self.shapes)):
            raise ValueError(f"expected {len(self.shapes)} tensors of shapes {[tuple(s) for s in self.shapes]}, got "
                             f"{[tuple(t.shape) for t in tensors]}")
        return torch.cat([t.reshape(-1) for t in tensors])

    def unpack(self, flat: torch.Tensor) -> list[torch.Tensor]:
        """Views of the packed vector in the members' shapes."""
        sizes = [math.prod(s) for s in self.shapes]
        return [part.view(s) for part, s in zip(flat.split(sizes), self.shapes)]

    # --- the oracle and the gauge ---------------------------------------------------------
    def group_norms(self, x: torch.Tensor) -> torch.Tensor:
        """(C,) the weighted joint norms n_c(x) of packed `x`, differentiable (the gradient of a
        zero group is taken as 0, a subgradient): the group-lasso penalty is λ·Σ_c n_c(x)."""
        self._check_input(x, "x")
        return self._group_squares(x, self._weights(x)).clamp_min(torch.finfo(x.dtype).tiny).sqrt()

    def _group_squares(self, x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        """(C,) Σ over group entries of (scale·x)² (differentiable)."""
        y = x * scale
        return torch.zeros(self.channels, dtype=x.dtype, device=x.device).index_add(
            0, self.group_of.to(x.device), y * y)

    def _group_norms(self, x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        """(C,) √(Σ over group entries of (scale·x)²)."""
        return self._group_squares(x, scale).sqrt()

    def _weights(self, like: torch.Tensor) -> torch.Tensor:
        return self.entry_weight.to(device=like.device, dtype=like.dtype)

    def _lmo_rows(self, stack: torch.Tensor, radii: torch.Tensor) -> torch.Tensor:
        """On rows normalised by a power of two first (`normalise_rows`; the LMO is homogeneous of
        degree 0 in d), so that the squares neither overflow nor underflow (for weights far from the
        float range's ends: Σ d'² ≤ n / min w², the top group's d'² ≥ ¼ / max w²)."""
        w = self._weights(stack)
        group_of = self.group_of.to(stack.device)
        scaled = normalise_rows(stack) / w                     # d' = d / w
        squares = torch.zeros(stack.shape[0], self.channels, dtype=stack.dtype, device=stack.device)
        squares.index_add_(1, group_of, scaled * scaled)
        keep = top_k_mask_rows(squares, self.k)
        total = torch.where(keep, squares, 0.0).sum(1).sqrt()
        factors = safe_scale(keep.to(stack.dtype), -radii, total)   # (B, C): −τ/‖d'_S‖ on S
        return factors[:, group_of] * (scaled / w)

    def norm(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x, "x")
        x = working(x, "x")
        return k_support_norm(self._group_norms(x, self._weights(x)), self.k)

    def dual_norm(self, d: torch.Tensor) -> torch.Tensor:
        self._check_input(d)
        d = working(d)
        return top_k_l2(self._group_norms(d, 1.0 / self._weights(d)), self.k)

    @property
    def diameter(self) -> float:
        return 2 * self.radius / min(self.weights)

    # --- plain data -----------------------------------------------------------------------
    def batch_key(self):
        """Not batched with other regions (its groups are its own)."""
        return type(self), id(self)

    def _spec_extra(self) -> dict:
        return {"shapes": [list(s) for s in self.shapes], "dims": list(self.dims), "indices": self.indices,
                "k": self._k_given, "weights": list(self.weights)}

    def to_spec(self) -> dict:
        return {"type": type(self).__name__, "radius": self.radius, **self._spec_extra()}

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(members={[tuple(s) for s in self.shapes]}, channels={self.channels}, "
                f"k={self._k_given!r}, radius={self.radius:g})")
