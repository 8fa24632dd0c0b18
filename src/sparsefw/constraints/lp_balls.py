"""Lp-norm balls C = {x : ‖x‖_p ≤ τ} (x flattened), p ∈ {1, 2, ∞} and 1 < p < ∞.

LMOs (M = input, τ = radius, 1/p + 1/q = 1), zero input gives v = 0:

    L2:  v = −τ·M/‖M‖₂                     L1:  v = −τ·sign(M_i)·e_i,  i = first argmax |M_i|
    L∞:  v = −τ·sign(M)                    Lp:  v = −τ·sign(M)·|M|^{q−1} / ‖M‖_q^{q−1}
"""
from __future__ import annotations

import math
from typing import Sequence

import torch

from ._ops import l2, safe_scale, working
from .base import Constraint


def _p_norm(x: torch.Tensor, p: float) -> torch.Tensor:
    """(Σ|x_i|^p)^{1/p}, scaled by max|x| against overflow, cascade-summed (see `_ops.l2`)."""
    top = x.abs().max()
    return top * (safe_scale(x.abs(), 1.0, top) ** p).sum() ** (1 / p)


class _FlatBall(Constraint):
    """A ball of a norm on the flattened tensor; subclasses give the LMO on a flat working copy."""

    def lmo(self, d: torch.Tensor) -> torch.Tensor:
        self._check_input(d)
        return self._flat_lmo(working(d).reshape(-1)).reshape(self.shape).to(d.dtype)

    def norm(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x, "x")
        return self._flat_norm(working(x, "x").reshape(-1))

    def dual_norm(self, d: torch.Tensor) -> torch.Tensor:
        self._check_input(d)
        return self._flat_dual(working(d).reshape(-1))

    def _flat_lmo(self, m: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _flat_norm(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _flat_dual(self, m: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class L2Ball(_FlatBall):
    """‖x‖₂ ≤ τ; self-dual; diameter 2τ."""

    def _flat_lmo(self, m):
        return safe_scale(m, -self.radius, l2(m))

    def _flat_norm(self, x):
        return l2(x)

    _flat_dual = _flat_norm

    @property
    def diameter(self) -> float:
        return 2 * self.radius


class L1Ball(_FlatBall):
    """‖x‖₁ ≤ τ; dual ‖·‖∞; vertices ±τ·e_i; diameter 2τ."""

    def _flat_lmo(self, m):
        i = torch.argmax(m.abs())  # first maximal index: deterministic ties
        v = torch.zeros_like(m)
        v[i] = -self.radius * torch.sign(m[i])
        return v

    def _flat_norm(self, x):
        return x.abs().sum()

    def _flat_dual(self, m):
        return m.abs().max()

    @property
    def diameter(self) -> float:
        return 2 * self.radius


class LinfBall(_FlatBall):
    """‖x‖∞ ≤ τ; dual ‖·‖₁; diameter 2τ√n."""

    def _flat_lmo(self, m):
        return -self.radius * torch.sign(m)

    def _flat_norm(self, x):
        return x.abs().max()

    def _flat_dual(self, m):
        return m.abs().sum()

    @property
    def diameter(self) -> float:
        return 2 * self.radius * math.sqrt(self.n)


class LpBall(_FlatBall):
    """‖x‖_p ≤ τ for 1 < p < ∞; dual ‖·‖_q with q = p/(p−1).

    Diameter 2τ·max(1, n^{1/2 − 1/p}) (the largest L2 norm on the Lp unit sphere).
    The LMO divides M by max|M| first so |M|^{q−1} cannot overflow.
    """

    def __init__(self, shape: Sequence[int] | torch.Size, p: float, radius: float):
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not (1 < p < math.inf):
            raise ValueError(f"p must be a number with 1 < p < inf (use L1Ball/LinfBall at the ends), got p={p!r}")
        super().__init__(shape, radius)
        self.p = float(p)
        self.q = self.p / (self.p - 1)

    def _flat_lmo(self, m):
        scaled = safe_scale(m, 1.0, m.abs().max())
        powered = torch.sign(scaled) * scaled.abs() ** (self.q - 1)
        return safe_scale(powered, -self.radius, _p_norm(scaled, self.q) ** (self.q - 1))

    def _flat_norm(self, x):
        return _p_norm(x, self.p)

    def _flat_dual(self, m):
        return _p_norm(m, self.q)

    def _spec_extra(self) -> dict:
        return {"p": self.p}

    @property
    def diameter(self) -> float:
        return 2 * self.radius * max(1.0, self.n ** (0.5 - 1 / self.p))
