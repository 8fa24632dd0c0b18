"""Shared constructor for regions parameterised by k (a fraction or a count of structures)."""
from __future__ import annotations

from typing import Sequence

import torch

from .base import Constraint, resolve_k


class ConstraintWithK(Constraint):
    """A region with a sparsity/rank parameter k, resolved against `_k_universe()` structures.

    The spec keeps k as the user gave it (fraction or count); rebuilding resolves it identically.
    """

    #: what k counts, for error messages
    _k_what = "entries"
    #: fewest tensor dims the region accepts (2 for regions on filters or matrices)
    _min_dims = 1

    def __init__(self, shape: Sequence[int] | torch.Size, k: int | float, radius: float):
        super().__init__(shape, radius)
        if len(self.shape) < self._min_dims:
            raise ValueError(f"{type(self).__name__} needs a shape with at least {self._min_dims} dims, "
                             f"got shape={tuple(self.shape)!r}")
        self._k_given = k
        self.k = resolve_k(k, self._k_universe(), self._k_what)

    def _k_universe(self) -> int:
        return self.n

    def _spec_extra(self) -> dict:
        return {"k": self._k_given}
