"""The feasible-region interface every constraint implements.

A region C ⊂ R^shape is convex, compact and contains 0. It is described by a gauge ("norm")
with C = {x : norm(x) ≤ radius}, and is used only through its linear minimisation oracle

    lmo(d) = argmin_{v ∈ C} <d, v>,   with value  <d, lmo(d)> = −radius · dual_norm(d).

The LMO is positively homogeneous of degree 0, lmo(c·d) = lmo(d) for c > 0, so the kernels may
normalise d first (`_ops.normalise_rows`, by a power of two): every finite d, subnormal or near the
largest float, gives a finite vertex (the zero direction gives v = 0).

Every LMO has one kernel, batched: `lmo_many` solves B regions that share a `batch_key` (same
type, shape and parameters; radii may differ) at once, by default as one (B, *shape) stack through
`_lmo_rows`; `lmo(d)` is its B = 1 case and `sparsefw.constraints.batched.lmos` its many-region use.

Regions are kept as plain data (`to_spec`) so optimizer state dicts never pickle objects.
"""
from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Any, Hashable, Sequence

import torch

from ._ops import working

_REGISTRY: dict[str, type["Constraint"]] = {}


def check_positive(name: str, value: Any) -> float:
    """float(value) if it is a positive finite number (not a bool); ValueError naming `name` otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive finite number, got {name}={value!r}")
    return float(value)


def resolve_k(k: Any, n: int, what: str = "entries") -> int:
    """k as a fraction (float in (0, 1]) → max(1, ⌊k·n⌋); as a count (int in [1, n]) → k."""
    if isinstance(k, bool) or not isinstance(k, (int, float)):
        raise ValueError(f"k must be a float fraction in (0, 1] or an int count, got k={k!r}")
    if isinstance(k, float):
        if not (0.0 < k <= 1.0):
            raise ValueError(f"k as a fraction must lie in (0, 1], got k={k!r}")
        return max(1, math.floor(k * n))
    if not (1 <= k <= n):
        raise ValueError(f"k as a count must lie in [1, {n}] (number of {what}), got k={k!r}")
    return int(k)


class Constraint(ABC):
    """A convex feasible region for one parameter tensor of shape `shape`."""

    #: the resolved k (int) for regions that have one, else None
    k: int | None = None

    def __init__(self, shape: Sequence[int] | torch.Size, radius: float):
        try:
            shape = torch.Size(int(s) for s in shape)
        except (TypeError, ValueError):
            raise ValueError(f"shape must be a sequence of positive ints, got shape={shape!r}") from None
        if len(shape) == 0 or any(s <= 0 for s in shape):
            raise ValueError(f"shape must be a non-empty sequence of positive ints, got shape={tuple(shape)!r}")
        self.shape = shape
        self.n = math.prod(shape)
        self.radius = check_positive("radius", radius)

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        _REGISTRY[cls.__name__] = cls

    # --- the oracle and the gauge -------------------------------------------------------
    def lmo(self, d: torch.Tensor) -> torch.Tensor:
        """argmin_{v ∈ C} <d, v>, a tensor of `shape` with d's dtype and device."""
        self._check_input(d)
        return type(self).lmo_many([self], [d])[0]

    def batch_key(self) -> Hashable:
        """Regions with equal keys (type, shape, parameters other than the radius) share `lmo_many`."""
        return type(self), self.shape, tuple(sorted(self._spec_extra().items()))

    @classmethod
    def lmo_many(cls, regions: Sequence["Constraint"], directions: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """[r.lmo(d) for r, d in zip(regions, directions)] for regions with one `batch_key` and
        directions of one dtype and device (shapes are not checked here).

        The B directions are stacked to (B, *shape) in working precision and solved by `_lmo_rows`
        of the first region with the per-row radii; subclasses may override this instead.
        """
        stack = working(directions[0].unsqueeze(0) if len(directions) == 1 else torch.stack(directions))
        radii = torch.tensor([r.radius for r in regions], dtype=stack.dtype).to(stack.device, non_blocking=True)
        return list(regions[0]._lmo_rows(stack, radii).to(directions[0].dtype).unbind(0))

    def _lmo_rows(self, stack: torch.Tensor, radii: torch.Tensor) -> torch.Tensor:
        """The LMOs of B copies of this region with radii (B,), for directions stack (B, *shape)."""
        raise NotImplementedError(f"{type(self).__name__} implements neither _lmo_rows nor lmo_many")

    @classmethod
    def frank_wolfe_terms(cls, thetas: Sequence[torch.Tensor], directions: Sequence[torch.Tensor],
                          radii: torch.Tensor, *constants: torch.Tensor
                          ) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor, torch.Tensor]:
        """A closed form of one Frank-Wolfe step's terms for B regions of this class (one dtype):
        (Δ_i = θ_i − v_i, ‖m_i‖₂, ‖Δ_i‖₂, G_i = <m_i, Δ_i>) with v_i = lmo_i(m_i), radii (B,), without
        forming v_i where the region allows (`constants`: `frank_wolfe_constants(radii)`, which a
        caller stepping repeatedly keeps; computed here when left out); regions that override it
        are stepped by it (`has_closed_form`), the others by their LMO."""
        raise NotImplementedError(f"{cls.__name__} has no closed-form Frank-Wolfe step")

    @classmethod
    def frank_wolfe_constants(cls, radii: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The values of the radii that `frank_wolfe_terms` uses at every step (none by default)."""
        return ()

    @abstractmethod
    def norm(self, x: torch.Tensor) -> torch.Tensor:
        """The gauge whose ball of radius `radius` is C (a 0-dim tensor)."""

    @abstractmethod
    def dual_norm(self, d: torch.Tensor) -> torch.Tensor:
        """The dual of `norm`: max_{norm(v) ≤ 1} <d, v> (a 0-dim tensor)."""

    @property
    @abstractmethod
    def diameter(self) -> float:
        """L2 diameter of C: max_{x,y ∈ C} ‖x − y‖₂."""

    def shift_inside(self, x: torch.Tensor) -> torch.Tensor:
        """x if x ∈ C, else x scaled radially onto the boundary of C."""
        nrm = float(self.norm(x))
        if nrm <= self.radius:
            return x
        return x * (self.radius / nrm)

    # --- plain-data round trip ---------------------------------------------------------
    def _spec_extra(self) -> dict:
        """Constructor arguments besides shape and radius (plain data)."""
        return {}

    def to_spec(self) -> dict:
        """A dict of str/int/float/list only: rebuild with `constraint_from_spec`."""
        return {"type": type(self).__name__, "shape": list(self.shape), "radius": self.radius, **self._spec_extra()}

    def _check_input(self, d: torch.Tensor, name: str = "d") -> None:
        if not isinstance(d, torch.Tensor):
            raise ValueError(f"{name} must be a torch.Tensor, got {type(d).__name__}")
        if d.shape != self.shape:
            raise ValueError(f"{name} has shape {tuple(d.shape)}, expected {tuple(self.shape)} for {self!r}")

    def __repr__(self) -> str:
        extra = "".join(f", {k}={v!r}" for k, v in self._spec_extra().items())
        return f"{type(self).__name__}(shape={tuple(self.shape)}{extra}, radius={self.radius:g})"


def lmo_stack(kind: type[Constraint], regions: Sequence[Constraint], stack: torch.Tensor,
              radii: torch.Tensor) -> torch.Tensor:
    """The LMOs of `regions` (one `batch_key`, of class `kind`) for directions stack (B, *shape) in
    working precision, with radii (B,) on its device: `_lmo_rows` where the class has it (no copy of
    the radii, no list), else its `lmo_many` restacked."""
    if kind._lmo_rows is not Constraint._lmo_rows:
        return regions[0]._lmo_rows(stack, radii)
    return torch.stack(kind.lmo_many(regions, list(stack.unbind(0))))


def has_closed_form(kind: type[Constraint]) -> bool:
    """Whether the regions of class `kind` give their step's terms in closed form (`frank_wolfe_terms`)."""
    return kind.frank_wolfe_terms.__func__ is not Constraint.frank_wolfe_terms.__func__


def constraint_from_spec(spec: dict) -> Constraint:
    """Inverse of `Constraint.to_spec`."""
    if not isinstance(spec, dict) or spec.get("type") not in _REGISTRY:
        raise ValueError(f"not a constraint spec (unknown 'type'): {spec!r}")
    args = {k: v for k, v in spec.items() if k != "type"}
    return _REGISTRY[spec["type"]](**args)
