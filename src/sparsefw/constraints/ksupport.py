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

from ._ops import k_support_norm, l2, normalise_rows, safe_scale, top_k_l2, top_k_mask_rows, working
from ._with_k import ConstraintWithK


class KSupportBall(ConstraintWithK):
    """The k-support norm ball on the flattened tensor."""

    def _lmo_rows(self, stack: torch.Tensor, radii: torch.Tensor) -> torch.Tensor:
        rows = normalise_rows(stack.reshape(stack.shape[0], -1))
        m_k = torch.where(top_k_mask_rows(rows.abs(), self.k), rows, 0.0)
        return safe_scale(m_k, -radii, l2(m_k, dim=1)).reshape(stack.shape)

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

    def _lmo_rows(self, stack: torch.Tensor, radii: torch.Tensor) -> torch.Tensor:
        """Filters ranked by ‖M_f‖₂² (same order as ‖M_f‖₂); ‖M_S‖_F² = Σ_{f∈S} ‖M_f‖₂², so v is
        one pass: M_f · (−τ/‖M_S‖_F) on S, 0 elsewhere."""
        filters = normalise_rows(stack.reshape(stack.shape[0], self.shape[0], -1))
        squares = (filters * filters).sum(2)
        keep = top_k_mask_rows(squares, self.k)
        kept = torch.where(keep, squares, 0.0)
        factors = safe_scale(keep.to(stack.dtype), -radii, kept.sum(1).sqrt())
        return (filters * factors[:, :, None]).reshape(stack.shape)

    def norm(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x, "x")
        return k_support_norm(self._filter_norms(working(x, "x")), self.k)

    def dual_norm(self, d: torch.Tensor) -> torch.Tensor:
        self._check_input(d)
        return top_k_l2(self._filter_norms(working(d)), self.k)

    @property
    def diameter(self) -> float:
        return 2 * self.radius
