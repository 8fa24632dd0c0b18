"""Operator-norm regions on the matrix view W = x.reshape(shape[0], prod(shape[1:])), r = its max rank.

SpectralPolytope (the rank-k spectral polytope): C = conv{τ·UVᵀ : U, V with k orthonormal columns}
                                                  = {‖W‖_op ≤ τ} ∩ {‖W‖_* ≤ kτ}.
    LMO     v = −τ·U_kV_kᵀ (top-k singular vectors of M)
    gauge   max(σ₁(W), Σσ(W)/k);  dual Σ_{i≤k} σ_i(M) (Ky Fan k-norm);  diameter 2τ√k
SpectralBall: the case k = r, ‖W‖_op ≤ τ (Scion's / Muon's region); LMO −τ·UVᵀ, dual ‖M‖_*.
k = 1 is the nuclear ball (`NuclearBall`); k = r the spectral-norm ball.

Singular directions with σ_i ≤ `NULL_TOL`·r·σ₁ are dropped from the vertex (they change the LMO value
by at most τ·k·NULL_TOL·r·σ₁): a zero direction gives v = 0 and a rank-deficient one a vertex of its
rank (every LMO keeps zeros). The SVD is exact (torch.linalg.svd for k = r; `top_k_svd` — Gram-eigh
then a k × p SVD, so U_k, V_k are orthonormal and v is feasible whatever the rounding — for k < r).
`SpectralBall(shape, radius, ns_steps=n)` replaces the SVD by n cubic Newton–Schulz iterations
(`newton_schulz`; matrix products only, as Muon): approximate. From X₀ = M/‖M‖_F every singular value
s = σ_i/‖M‖_F ∈ (0, 1] follows g(s) = 1.5s − 0.5s³, which maps [0, 1] into itself (increasing, g(1) = 1),
so v = −τ·U f_n(S) Vᵀ, f_n = g∘…∘g, has ‖v‖_op ≤ τ (feasible, up to rounding) and its value falls short
of the exact one by exactly τ·Σ σ_i (1 − f_n(σ_i/‖M‖_F)): a relative shortfall ≤ 1 − f_n(σ_min/‖M‖_F),
which needs ≈ log_{1.5}(‖M‖_F/σ_min) steps to become small, then shrinks quadratically (1 − g(1 − e) =
1.5e² − 0.5e³). Muon's quintic coefficients converge faster but leave singular values up to ≈ 1.2:
outside the ball, so they are not used. The SVD stays the default (exact).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch

from ._ops import normalise_rows, working
from ._with_k import ConstraintWithK
from .topk_svd import tall, top_k_svd

#: singular values ≤ NULL_TOL · rank · σ₁ count as zero in the LMO (see the module docstring)
NULL_TOL = torch.finfo(torch.float32).eps


def partial_isometry(mats: torch.Tensor, k: int) -> torch.Tensor:
    """U_kV_kᵀ of every matrix of a stack (B, m, p): top-k singular vectors, null directions dropped."""
    rank = min(mats.shape[-2:])
    if k == rank:
        U, S, Vh = torch.linalg.svd(tall(mats), full_matrices=False)
        if mats.shape[-2] < mats.shape[-1]:
            U, Vh = Vh.mT, U.mT
    else:
        U, S, Vh = top_k_svd(mats, k)
    keep = S > S.amax(-1, keepdim=True) * (NULL_TOL * rank)
    return (U * keep.unsqueeze(-2).to(U.dtype)) @ Vh


def newton_schulz(mats: torch.Tensor, steps: int) -> torch.Tensor:
    """f_n(M) = U f_n(S) Vᵀ of every matrix of a stack (B, m, p) by n cubic Newton–Schulz iterations
    X ← 1.5·X − 0.5·(X Xᵀ) X from X₀ = M/‖M‖_F (module docstring; a zero matrix gives 0)."""
    wide = mats.mT if mats.shape[-2] > mats.shape[-1] else mats
    size = (wide * wide).sum((-2, -1), keepdim=True).sqrt()
    x = wide / torch.where(size > 0, size, 1.0)
    for _ in range(steps):
        x = 1.5 * x - 0.5 * (x @ x.mT) @ x
    return x.mT if wide is not mats else x


def _singular_values(x: torch.Tensor, rows: int) -> torch.Tensor:
    return torch.linalg.svdvals(tall(working(x, "x").reshape(rows, -1)))


class SpectralPolytope(ConstraintWithK):
    """The rank-k spectral polytope {‖W‖_op ≤ τ} ∩ {‖W‖_* ≤ kτ}; k counts ranks of the matrix view."""

    _k_what = "ranks (min(shape[0], prod(shape[1:])))"
    _min_dims = 2

    def _k_universe(self) -> int:
        return min(self.shape[0], self.n // self.shape[0])

    def _lmo_rows(self, stack: torch.Tensor, radii: torch.Tensor) -> torch.Tensor:
        v = self._isometry(normalise_rows(stack.reshape(stack.shape[0], self.shape[0], -1)))
        return (v * -radii.reshape(-1, 1, 1).to(v.dtype)).reshape(stack.shape)

    def _isometry(self, mats: torch.Tensor) -> torch.Tensor:
        """The LMO's direction before −τ for a batch of normalised matrices: U_kV_kᵀ."""
        return partial_isometry(mats, self.k)

    def norm(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x, "x")
        s = _singular_values(x, self.shape[0])
        return torch.maximum(s.max(), s.sum() / self.k)

    def dual_norm(self, d: torch.Tensor) -> torch.Tensor:
        self._check_input(d)
        return _singular_values(d, self.shape[0])[:self.k].sum()

    @property
    def diameter(self) -> float:
        return 2 * self.radius * math.sqrt(self.k)


class SpectralBall(SpectralPolytope):
    """‖W‖_op ≤ τ (the rank-k spectral polytope with k = the max rank); `ns_steps`: None (exact SVD) or
    the number of Newton–Schulz iterations of an approximate LMO (module docstring)."""

    def __init__(self, shape: Sequence[int] | torch.Size, radius: float, ns_steps: int | None = None):
        try:
            rank = min(int(shape[0]), math.prod(int(s) for s in shape[1:]))
        except (TypeError, ValueError, IndexError):
            rank = 1          # the base class reports the bad shape
        if ns_steps is not None and (isinstance(ns_steps, bool) or not isinstance(ns_steps, int) or ns_steps < 1):
            raise ValueError(f"ns_steps must be None or an int ≥ 1, got ns_steps={ns_steps!r}")
        super().__init__(shape, max(rank, 1), radius)
        self.ns_steps = ns_steps

    def _spec_extra(self) -> dict:
        return {} if self.ns_steps is None else {"ns_steps": self.ns_steps}

    def _isometry(self, mats: torch.Tensor) -> torch.Tensor:
        """UVᵀ (exact), or its Newton–Schulz approximation with `ns_steps`."""
        return super()._isometry(mats) if self.ns_steps is None else newton_schulz(mats, self.ns_steps)

    def norm(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x, "x")
        return _singular_values(x, self.shape[0]).max()
