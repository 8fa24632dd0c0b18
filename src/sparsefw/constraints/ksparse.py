"""K-sparse polytope (Pokutta, Spiegel & Zimmer 2020): conv{x : ‖x‖₀ ≤ k, x_i ∈ {0, ±τ}}
= B₁(kτ) ∩ B∞(τ).

    gauge  max(‖x‖∞, ‖x‖₁/k)          dual  Σ of the k largest |d_i|
    LMO    v = −τ·sign(M_i) on the k largest |M_i| (ties: lowest index), 0 elsewhere
    diameter 2τ√k
"""
from __future__ import annotations

import math

import torch

from ._ops import top_k_mask_rows, working
from ._with_k import ConstraintWithK


class KSparsePolytope(ConstraintWithK):
    """Vertices: k entries equal to ±radius, the rest 0."""

    def _lmo_rows(self, stack: torch.Tensor, radii: torch.Tensor) -> torch.Tensor:
        rows = stack.reshape(stack.shape[0], -1)
        signs = torch.where(top_k_mask_rows(rows.abs(), self.k), torch.sign(rows), 0.0)
        return (signs * -radii[:, None]).reshape(stack.shape)

    def norm(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x, "x")
        a = working(x, "x").abs()
        return torch.maximum(a.max(), a.sum() / self.k)

    def dual_norm(self, d: torch.Tensor) -> torch.Tensor:
        self._check_input(d)
        return torch.topk(working(d).abs().reshape(-1), self.k, sorted=False).values.sum()

    @property
    def diameter(self) -> float:
        return 2 * self.radius * math.sqrt(self.k)
