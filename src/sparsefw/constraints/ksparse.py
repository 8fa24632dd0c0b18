"""K-sparse polytope (Pokutta, Spiegel & Zimmer 2020): conv{x : ‖x‖₀ ≤ k, x_i ∈ {0, ±τ}}
= B₁(kτ) ∩ B∞(τ).

    gauge  max(‖x‖∞, ‖x‖₁/k)          dual  Σ of the k largest |d_i|
    LMO    v = −τ·sign(M_i) on the k largest |M_i| (ties: lowest index), 0 elsewhere
    diameter 2τ√k
"""
from __future__ import annotations

import math

import torch

from ._ops import top_k_mask, working
from ._with_k import ConstraintWithK


class KSparsePolytope(ConstraintWithK):
    """Vertices: k entries equal to ±radius, the rest 0."""

    def lmo(self, d: torch.Tensor) -> torch.Tensor:
        self._check_input(d)
        m = working(d).reshape(-1)
        v = torch.where(top_k_mask(m.abs(), self.k), -self.radius * torch.sign(m), 0.0)
        return v.reshape(self.shape).to(d.dtype)

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
