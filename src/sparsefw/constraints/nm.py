"""N:M semi-structured sparsity: k-support balls over groups of M consecutive inputs, k = N.

The groups of a tensor of `shape` are the runs of M consecutive entries along the input axis `dim`
(all other indices fixed): for an nn.Linear weight (out, in) and a conv weight (out, in, kh, kw)
dim = 1 (M consecutive input channels at one output unit and kernel position, as the 2:4 GEMM
kernels and `compress.prune(pattern="N:M")` group them), for an (in, out)-stored Conv1D dim = 0.
When M does not divide shape[dim], the last run of every line is shorter (as if zero-padded).
A tensor is *N:M-sparse* when every group has at most N nonzeros.

With ‖·‖_(N) the k-support norm (k = N) of a group and D_g(d) = ‖top-N of |d_g|‖₂ its dual:

combine="l2" (default; the joint ball)   C = conv{v : v N:M-sparse, ‖v‖₂ ≤ τ}
    gauge   √(Σ_g ‖x_g‖_(N)²)        dual √(Σ_g D_g(d)²) = ‖P(d)‖₂,  P(d) = d on its top N per group
    LMO     v = −τ·P(d)/‖P(d)‖₂      diameter 2τ
combine="max" (the product of the G group balls of radius τ)
    gauge   max_g ‖x_g‖_(N)          dual Σ_g D_g(d)
    LMO     v_g = −τ·P(d)_g/‖P(d)_g‖₂ in every group g   diameter 2τ√G

(The dual of the ℓ2 / ℓ∞ combination of norms on disjoint blocks is the ℓ2 / ℓ1 combination of
their duals.) Every vertex is N:M-sparse in both; "l2" is the k-support ball with its supports
restricted to the N:M ones (its vertices' group norms follow the direction, as `KSupportBall`'s),
"max" gives every group of every vertex the norm τ. N = M gives the L2 ball ("l2").
Ties in a group go to the lowest index; a zero group of d gives a zero group of v.
"""
from __future__ import annotations

import math
import re
from typing import Sequence

import torch
import torch.nn.functional as F

from ._ops import normalise_rows, safe_scale, top_k_mask_rows, working
from .base import Constraint

COMBINES = ("l2", "max")
_PATTERN = re.compile(r"^\s*(\d+)\s*:\s*(\d+)\s*$")


def parse_pattern(pattern) -> tuple[int, int]:
    """"N:M" (a str, 1 ≤ N ≤ M) → (N, M); ValueError naming `pattern` otherwise."""
    match = _PATTERN.match(pattern) if isinstance(pattern, str) else None
    if match is None or not 1 <= int(match.group(1)) <= int(match.group(2)):
        raise ValueError(f"pattern must be a string 'N:M' with 1 ≤ N ≤ M (N nonzeros in every M consecutive "
                         f"inputs), got pattern={pattern!r}")
    return int(match.group(1)), int(match.group(2))


def k_support_norm_groups(a: torch.Tensor, k: int) -> torch.Tensor:
    """(R,) k-support norms of the rows of a (R, m) ≥ 0 (`_ops.k_support_norm`, vectorised over rows):
    with z the row sorted descending and T_j = Σ_{i ≥ j} z_i, the norm² is the least feasible
    f(j) = Σ_{i<j} z_i² + T_j²/(k − j), j < k, feasible iff T_j ≥ (k − j)·z_j."""
    k = min(k, a.shape[1])
    z = torch.sort(a, dim=1, descending=True).values
    tail = torch.flip(torch.cumsum(torch.flip(z, (1,)), 1), (1,))[:, :k]
    head = (torch.cumsum(z * z, 1) - z * z)[:, :k]
    count = torch.arange(k, 0, -1, device=a.device, dtype=a.dtype)
    f = head + tail * tail / count
    feasible = tail >= count * z[:, :k] * (1 - 64 * torch.finfo(a.dtype).eps)
    return torch.where(feasible, f, torch.inf).amin(1).sqrt()


def group_view(t: torch.Tensor, dim: int, m: int) -> torch.Tensor:
    """(R, m): the groups of M consecutive entries of t along `dim`, zero-padded at the end of
    every line when m does not divide t.shape[dim] (a copy unless dim is last and m divides)."""
    x = t.movedim(dim, -1)
    pad = (-x.shape[-1]) % m
    if pad:
        x = F.pad(x, (0, pad))
    return x.reshape(-1, m)


def ungroup(groups: torch.Tensor, shape: Sequence[int], dim: int) -> torch.Tensor:
    """Inverse of `group_view` for a tensor of `shape` (the padding dropped)."""
    moved = list(shape)
    size = moved.pop(dim)
    lines = groups.reshape(*moved, -1)[..., :size]
    return lines.movedim(-1, dim).contiguous()


class NMKSupportBall(Constraint):
    """k-support balls (k = n) over the groups of m consecutive entries along `dim` (module docstring)."""

    def __init__(self, shape: Sequence[int] | torch.Size, n: int = 2, m: int = 4, *, radius: float,
                 dim: int | None = None, combine: str = "l2"):
        super().__init__(shape, radius)
        for name, value in (("n", n), ("m", m)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {name}={value!r}")
        if n > m:
            raise ValueError(f"n must be at most m (n nonzeros in every m consecutive inputs), got n={n!r}, m={m!r}")
        ndim = len(self.shape)
        if dim is None:
            dim = 1 if ndim >= 2 else 0
        if isinstance(dim, bool) or not isinstance(dim, int) or not -ndim <= dim < ndim:
            raise ValueError(f"dim must be an int indexing a dim of shape {tuple(self.shape)}, got dim={dim!r}")
        if combine not in COMBINES:
            raise ValueError(f"combine must be one of {COMBINES}, got combine={combine!r}")
        #: k = N nonzeros per group (`n` is the base class's entry count), M the group length
        self.k, self.m, self.dim, self.combine = n, m, dim % ndim, combine
        #: number of groups G (shorter last runs included)
        self.groups = self._count_groups()

    def _count_groups(self) -> int:
        lines = math.prod(self.shape) // self.shape[self.dim]
        return lines * math.ceil(self.shape[self.dim] / self.m)

    @property
    def pattern(self) -> str:
        return f"{self.k}:{self.m}"

    # --- the oracle and the gauge ---------------------------------------------------------
    def _lmo_rows(self, stack: torch.Tensor, radii: torch.Tensor) -> torch.Tensor:
        """Top n of |d| in every group (`top_k_mask_rows`), scaled to −τ/‖·‖₂ jointly ("l2", rows
        normalised by a power of two first) or per group ("max", each group divided by its largest
        |d| first, so that no group's squares underflow)."""
        b = stack.shape[0]
        rows = normalise_rows(stack) if self.combine == "l2" else stack
        g = group_view(rows, self.dim + 1, self.m)                  # (b·G, m)
        top = torch.where(top_k_mask_rows(g.abs(), self.k), g, 0.0)
        if self.combine == "l2":
            top = top.reshape(b, -1)
            out = safe_scale(top, -radii, (top * top).sum(1).sqrt())
        else:
            peak = top.abs().amax(1, keepdim=True)
            top = torch.where(peak > 0, top / torch.where(peak > 0, peak, 1.0), 0.0).reshape(b, -1, self.m)
            out = safe_scale(top, -radii[:, None], (top * top).sum(2).sqrt())
        return ungroup(out, stack.shape, self.dim + 1)

    def _group_values(self, t: torch.Tensor) -> torch.Tensor:
        return group_view(t.abs(), self.dim, self.m)

    def _combine(self, per_group: torch.Tensor, dual: bool) -> torch.Tensor:
        if self.combine == "l2":
            return (per_group * per_group).sum().sqrt()
        return per_group.sum() if dual else per_group.amax()

    def norm(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x, "x")
        return self._combine(k_support_norm_groups(self._group_values(working(x, "x")), self.k), dual=False)

    def dual_norm(self, d: torch.Tensor) -> torch.Tensor:
        self._check_input(d)
        a = self._group_values(working(d))
        top = torch.topk(a, self.k, dim=1, sorted=False).values
        return self._combine((top * top).sum(1).sqrt(), dual=True)

    @property
    def diameter(self) -> float:
        return 2 * self.radius * (1.0 if self.combine == "l2" else math.sqrt(self.groups))

    def mask(self, x: torch.Tensor) -> torch.Tensor:
        """Boolean mask of x's shape: the n largest |x| of every group (ties: lowest index)."""
        self._check_input(x, "x")
        keep = top_k_mask_rows(self._group_values(working(x, "x")), self.k)
        return ungroup(keep, self.shape, self.dim)

    def _spec_extra(self) -> dict:
        return {"n": self.k, "m": self.m, "dim": self.dim, "combine": self.combine}
