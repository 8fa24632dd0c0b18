"""Lp-norm balls C = {x : ‖x‖_p ≤ τ} (x flattened), p ∈ {1, 2, ∞} and 1 < p < ∞.

LMOs (M = input, τ = radius, 1/p + 1/q = 1), zero input gives v = 0:

    L2:  v = −τ·M/‖M‖₂                     L1:  v = −τ·sign(M_i)·e_i,  i = first argmax |M_i|
    L∞:  v = −τ·sign(M)                    Lp:  v = −τ·sign(M)·|M|^{q−1} / ‖M‖_q^{q−1}

The LMO kernels act on B flattened directions at once (rows of a (B, n) stack); L2 balls of any
shapes share one kernel over the list (`torch._foreach_*`, norms accumulated in float64).
"""
from __future__ import annotations

import math
from typing import Hashable, Sequence

import torch

from ._ops import l2, normalise_rows, normalising_factors, safe_scale, working
from .base import Constraint


def _p_norm(x: torch.Tensor, p: float) -> torch.Tensor:
    """(Σ|x_i|^p)^{1/p} of every row of x (B, n) → (B,), as max|x|·‖x/max|x|‖_p against overflow,
    cascade-summed (see `_ops.l2`). The rows are first normalised by a power of two (exact), so that
    1/max|x| cannot overflow for a subnormal max."""
    a = x.abs()
    unit = normalise_rows(a)
    return a.amax(1) * (safe_scale(unit, 1.0, unit.amax(1)) ** p).sum(1) ** (1 / p)


class _FlatBall(Constraint):
    """A ball of a norm on the flattened tensor; subclasses give the LMO on rows (B, n) and the
    norm and dual norm on one flat working copy."""

    def _lmo_rows(self, stack: torch.Tensor, radii: torch.Tensor) -> torch.Tensor:
        return self._flat_lmo_rows(stack.reshape(stack.shape[0], -1), radii).reshape(stack.shape)

    def norm(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x, "x")
        return self._flat_norm(working(x, "x").reshape(-1))

    def dual_norm(self, d: torch.Tensor) -> torch.Tensor:
        self._check_input(d)
        return self._flat_dual(working(d).reshape(-1))

    def _flat_lmo_rows(self, rows: torch.Tensor, radii: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _flat_norm(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _flat_dual(self, m: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class L2Ball(_FlatBall):
    """‖x‖₂ ≤ τ; self-dual; diameter 2τ. All L2 balls (any shape) share one `lmo_many` call."""

    def batch_key(self) -> Hashable:
        return L2Ball

    @classmethod
    def lmo_many(cls, regions, directions):
        """v_i = −τ_i·M_i/‖M_i‖₂ for a list of any shapes: ‖M_i‖₂ by `_foreach_norm` accumulated in
        float64 (float32 accumulation is off by 1e-5 on 1M entries), one `_foreach_mul`. Each M_i is
        first normalised by a power of two (`_ops.normalising_factors`; v is homogeneous of degree 0
        in M_i), so that neither ‖M_i‖₂ nor τ_i/‖M_i‖₂ can under- or overflow."""
        work = [working(d) for d in directions]
        powers = normalising_factors(torch.stack(torch._foreach_norm(work, math.inf)), max(w.numel() for w in work))
        if powers is not None:
            work = torch._foreach_mul(torch._foreach_mul(work, list(powers[0].unbind())), list(powers[1].unbind()))
        norms = torch.stack(torch._foreach_norm(work, 2, dtype=torch.float64))
        radii = torch.tensor([r.radius for r in regions], dtype=torch.float64).to(norms.device, non_blocking=True)
        factors = torch.where(norms > 0, -radii / torch.where(norms > 0, norms, 1.0), 0.0).to(work[0].dtype)
        return [v.to(d.dtype) for v, d in zip(torch._foreach_mul(work, list(factors.unbind())), directions)]

    @classmethod
    def frank_wolfe_terms(cls, thetas, directions, radii, squares=None, half_inverses=None):
        """The step's terms without a vertex: with c = τ/‖m‖ (0 for m = 0: v = 0; at most the largest
        float, since for ‖m‖ < τ/max float v = −max·m lies inside the ball), v = −c·m and

            Δ = θ − v = θ + c·m,   G = <m, Δ> = ‖m‖·(‖Δ‖² − ‖θ‖² + τ²)/(2τ)

        (expand ‖Δ‖² = ‖θ‖² + 2c<θ, m> + c²‖m‖² with c‖m‖ = τ): three norms, no dot product. ‖m‖ is
        accumulated in float64 (float32 is off by ~1e-5 relative at 1M entries, and squares of tiny
        directions underflow; either would put v outside the ball); the rest in radii's dtype, which
        `thetas` and `directions` share. `squares`, `half_inverses`: `frank_wolfe_constants`."""
        norm_m = torch.stack(torch._foreach_norm(directions, 2, dtype=torch.float64))
        scale = (radii / norm_m).nan_to_num_(posinf=0.0).clamp_max_(torch.finfo(thetas[0].dtype).max)
        diff = torch._foreach_addcmul(thetas, directions, list(scale.to(thetas[0].dtype).unbind(0)))
        norm_t, norm_d = torch.stack(torch._foreach_norm(list(thetas) + list(diff), 2, dtype=radii.dtype)
                                     ).view(2, -1).unbind(0)
        norm_m = norm_m.to(radii.dtype)
        if squares is None:
            squares, half_inverses = cls.frank_wolfe_constants(radii)
        gap = norm_m * ((norm_d * norm_d - norm_t * norm_t) + squares) * half_inverses
        return list(diff), norm_m, norm_d, gap

    @classmethod
    def frank_wolfe_constants(cls, radii):
        """(τ², 1/(2τ)) of the gap's closed form."""
        return radii * radii, 0.5 / radii

    def _flat_norm(self, x):
        return l2(x)

    _flat_dual = _flat_norm

    @property
    def diameter(self) -> float:
        return 2 * self.radius


class L1Ball(_FlatBall):
    """‖x‖₁ ≤ τ; dual ‖·‖∞; vertices ±τ·e_i; diameter 2τ."""

    def _flat_lmo_rows(self, rows, radii):
        i = torch.argmax(rows.abs(), dim=1, keepdim=True)  # first maximal index: deterministic ties
        return torch.zeros_like(rows).scatter_(1, i, -radii[:, None] * torch.sign(rows.gather(1, i)))

    def _flat_norm(self, x):
        return x.abs().sum()

    def _flat_dual(self, m):
        return m.abs().max()

    @property
    def diameter(self) -> float:
        return 2 * self.radius


class LinfBall(_FlatBall):
    """‖x‖∞ ≤ τ; dual ‖·‖₁; diameter 2τ√n."""

    def _flat_lmo_rows(self, rows, radii):
        return -radii[:, None] * torch.sign(rows)

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
    The LMO (homogeneous of degree 0 in M) divides M by max|M| first so |M|^{q−1} cannot overflow,
    after an exact power-of-two normalisation (`normalise_rows`) so 1/max|M| cannot either.
    """

    def __init__(self, shape: Sequence[int] | torch.Size, p: float, radius: float):
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not (1 < p < math.inf):
            raise ValueError(f"p must be a number with 1 < p < inf (use L1Ball/LinfBall at the ends), got p={p!r}")
        super().__init__(shape, radius)
        self.p = float(p)
        self.q = self.p / (self.p - 1)

    def _flat_lmo_rows(self, rows, radii):
        rows = normalise_rows(rows)
        scaled = safe_scale(rows, 1.0, rows.abs().amax(1))
        powered = torch.sign(scaled) * scaled.abs() ** (self.q - 1)
        return safe_scale(powered, -radii, _p_norm(scaled, self.q) ** (self.q - 1))

    def _flat_norm(self, x):
        return _p_norm(x.unsqueeze(0), self.p)[0]

    def _flat_dual(self, m):
        return _p_norm(m.unsqueeze(0), self.q)[0]

    def _spec_extra(self) -> dict:
        return {"p": self.p}

    @property
    def diameter(self) -> float:
        return 2 * self.radius * max(1.0, self.n ** (0.5 - 1 / self.p))
