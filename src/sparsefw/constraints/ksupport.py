"""k-support norm balls (Argyriou, Foygel & Srebro 2012) on entries and on filters.

KSupportBall: C = conv{v : ‖v‖₀ ≤ k, ‖v‖₂ ≤ τ}.
    LMO     v = −τ·M_k/‖M_k‖₂, M_k = M on its k largest |M_i| (ties: lowest index)
    gauge   k-support norm (Prop. 2.1 closed form, `_ops.k_support_norm`)
    dual    ‖top-k of |M|‖₂;  diameter 2τ

GroupKSupportBall: groups are the slices along dim 0 (output filters) of a ≥2-D tensor;
C = conv{V : at most k nonzero filters, ‖V‖_F ≤ τ}.
    LMO     S = the k filters with the largest ‖M_f‖₂; v = −τ·M_S/‖M_S‖_F
    gauge   k-support norm of the vector (‖x_f‖₂)_f;  dual ‖top-k of (‖M_f‖₂)_f‖₂;  diameter 2τ
k = 1 gives the (group-)L1 ball, k = n the L2 ball.
"""
from __future__ import annotations

import torch

from ._ops import k_support_norm, l2, safe_scale, top_k_l2, top_k_mask, working
from ._with_k import ConstraintWithK


class KSupportBall(ConstraintWithK):
    """The k-support norm ball on the flattened tensor."""

    def lmo(self, d: torch.Tensor) -> torch.Tensor:
        self._check_input(d)
        m = working(d).reshape(-1)
        m_k = torch.where(top_k_mask(m.abs(), self.k), m, 0.0)
        return safe_scale(m_k, -self.radius, l2(m_k)).reshape(self.shape).to(d.dtype)

    def norm(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x, "x")
        return k_support_norm(working(x, "x").abs().reshape(-1), self.k)

    def dual_norm(self, d: torch.Tensor) -> torch.Tensor:
        self._check_input(d)
        return top_k_l2(working(d).abs().reshape(-1), self.k)

    @property
    def diameter(self) -> float:
        return 2 * self.radius


class GroupKSupportBall(ConstraintWithK):
    """The k-support norm of filter norms, filters = slices along dim 0."""

    _k_what = "filters (shape[0])"
    _min_dims = 2

    def _k_universe(self) -> int:
        return self.shape[0]

    def _filter_norms(self, t: torch.Tensor) -> torch.Tensor:
        return l2(t.reshape(self.shape[0], -1), dim=1)

    def lmo(self, d: torch.Tensor) -> torch.Tensor:
        self._check_input(d)
        m = working(d).reshape(self.shape[0], -1)
        norms = l2(m, dim=1)
        keep = top_k_mask(norms, self.k)
        m_s = torch.where(keep[:, None], m, 0.0)
        return safe_scale(m_s, -self.radius, l2(m_s)).reshape(self.shape).to(d.dtype)

    def norm(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x, "x")
        return k_support_norm(self._filter_norms(working(x, "x")), self.k)

    def dual_norm(self, d: torch.Tensor) -> torch.Tensor:
        self._check_input(d)
        return top_k_l2(self._filter_norms(working(d)), self.k)

    @property
    def diameter(self) -> float:
        return 2 * self.radius
