"""Spectral regions on the matrix view W = x.reshape(shape[0], prod(shape[1:])).

SpectralKSupportBall: C = conv{V : rank V ≤ k, ‖V‖_F ≤ τ}.
    LMO     v = −τ·[M]_k/‖[M]_k‖_F = −τ·U_kΣ_kV_kᵀ/‖Σ_k‖₂ (best rank-k approximation, `topk_svd`)
    gauge   k-support norm of the singular values;  dual ‖σ_1..k(M)‖₂;  diameter 2τ
NuclearBall: the case k = 1, ‖W‖_* ≤ τ; LMO −τ·u₁v₁ᵀ, dual = spectral norm σ₁.
A zero input gives v = 0. Regions of one shape and k share one batched `best_rank_k` (one batched
eigh for B matrices, e.g. the identical convs of a ResNet stage).
"""
from __future__ import annotations

from typing import Sequence

import torch

from ._ops import k_support_norm, normalise_rows, safe_scale, top_k_l2, working
from ._with_k import ConstraintWithK
from .topk_svd import best_rank_k, best_rank_k_warm, tall


class SpectralKSupportBall(ConstraintWithK):
    """The spectral k-support norm ball (low rank); k counts ranks of the matrix view."""

    _k_what = "ranks (min(shape[0], prod(shape[1:])))"
    _min_dims = 2

    def _k_universe(self) -> int:
        return min(self.shape[0], self.n // self.shape[0])

    def _matrix(self, t: torch.Tensor, name: str) -> torch.Tensor:
        self._check_input(t, name)
        return working(t, name).reshape(self.shape[0], -1)

    def _lmo_rows(self, stack: torch.Tensor, radii: torch.Tensor) -> torch.Tensor:
        approx, size = best_rank_k(normalise_rows(stack.reshape(stack.shape[0], self.shape[0], -1)), self.k)
        return safe_scale(approx, -radii, size).reshape(stack.shape)

    def warm_lmo_rows(self, stack: torch.Tensor, radii: torch.Tensor, basis: torch.Tensor | None
                      ) -> tuple[torch.Tensor, torch.Tensor]:
        """(vertices, next basis) of `_lmo_rows` with `best_rank_k_warm`: the direction projected on
        the span of last step's `basis` (B, s, k), None for the exact LMO (a refresh)."""
        approx, size, basis = best_rank_k_warm(normalise_rows(stack.reshape(stack.shape[0], self.shape[0], -1)),
                                               self.k, basis)
        return safe_scale(approx, -radii, size).reshape(stack.shape), basis

    def norm(self, x: torch.Tensor) -> torch.Tensor:
        return k_support_norm(torch.linalg.svdvals(tall(self._matrix(x, "x"))), self.k)

    def dual_norm(self, d: torch.Tensor) -> torch.Tensor:
        return top_k_l2(torch.linalg.svdvals(tall(self._matrix(d, "d"))), self.k)

    @property
    def diameter(self) -> float:
        return 2 * self.radius


class NuclearBall(SpectralKSupportBall):
    """‖W‖_* ≤ τ (spectral k-support with k = 1)."""

    def __init__(self, shape: Sequence[int] | torch.Size, radius: float):
        super().__init__(shape, 1, radius)

    def _spec_extra(self) -> dict:
        return {}
