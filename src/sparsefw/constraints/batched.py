"""All linear minimisation oracles of one Frank-Wolfe step, regions of one kind sharing tensor ops.

One `Constraint.lmo` call per parameter costs about ten small tensor ops, which dominates a step on
models with many small tensors. `lmos` groups the regions by `Constraint.batch_key` (type, shape
and parameters, not the radius — every `L2Ball` falls in one group whatever its shape) and by the
directions' dtype and device, and calls each group's `lmo_many` once: the same kernel that a single
`lmo` call runs with B = 1, so both give the same result.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Sequence

from torch import Tensor

from .base import Constraint


def lmos(constraints: Sequence[Constraint], directions: Sequence[Tensor]) -> list[Tensor]:
    """[c.lmo(d) for c, d in zip(constraints, directions)], batched where the regions allow."""
    if len(constraints) != len(directions):
        raise ValueError(f"constraints and directions must have equal lengths, got "
                         f"len(constraints)={len(constraints)} and len(directions)={len(directions)}")
    groups: dict[tuple, list[int]] = defaultdict(list)
    for i, (c, d) in enumerate(zip(constraints, directions)):
        if not isinstance(c, Constraint):
            raise ValueError(f"constraints[{i}] must be a Constraint, got {type(c).__name__}")
        c._check_input(d, f"directions[{i}]")
        groups[(c.batch_key(), d.dtype, d.device)].append(i)
    vertices: list[Tensor | None] = [None] * len(constraints)
    for idx in groups.values():
        kind = type(constraints[idx[0]])
        for i, v in zip(idx, kind.lmo_many([constraints[i] for i in idx], [directions[i] for i in idx])):
            vertices[i] = v
    return vertices
