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
Newton–Schulz iterations (Muon) approximate UVᵀ without an SVD but are not used here: their output is
not a partial isometry, so its value and feasibility would hold only to the iteration's error.
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


def _singular_values(x: torch.Tensor, rows: int) -> torch.Tensor:
    return torch.linalg.svdvals(tall(working(x, "x").reshape(rows, -1)))


class SpectralPolytope(ConstraintWithK):
    """The rank-k spectral polytope {‖W‖_op ≤ τ} ∩ {‖W‖_* ≤ kτ}; k counts ranks of the matrix view."""

    _k_what = "ranks (min(shape[0], prod(shape[1:])))"
    _min_dims = 2

    def _k_universe(self) -> int:
        return min(self.shape[0], self.n // self.shape[0])

    def _lmo_rows(self, stack: torch.Tensor, radii: torch.Tensor) -> torch.Tensor:
        mats = normalise_rows(stack.reshape(stack.shape[0], self.shape[0], -1))
        v = partial_isometry(mats, self.k)
        return (v * -radii.reshape(-1, 1, 1).to(v.dtype)).reshape(stack.shape)

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
    """‖W‖_op ≤ τ (the rank-k spectral polytope with k = the max rank)."""

    def __init__(self, shape: Sequence[int] | torch.Size, radius: float):
        try:
            rank = min(int(shape[0]), math.prod(int(s) for s in shape[1:]))
        except (TypeError, ValueError, IndexError):
            rank = 1          # the base class reports the bad shape
        super().__init__(shape, max(rank, 1), radius)

    def _spec_extra(self) -> dict:
        return {}

    def norm(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x, "x")
        return _singular_values(x, self.shape[0]).max()
