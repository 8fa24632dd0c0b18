"""All linear minimisation oracles of one SFW step, with regions of the same kind sharing tensor ops.

One `Constraint.lmo` call per parameter costs about ten small tensor ops each, which dominates a
step on models with many small tensors. Here

* every `L2Ball` (any shape): v = −τ·M/‖M‖₂ with `torch._foreach_*` over all of them at once
  (per dtype and device);
* `KSupportBall`, `KSparsePolytope`, `GroupKSupportBall` with equal (shape, k, radius, dtype,
  device) — e.g. the repeated blocks of a ResNet — are stacked into one (B, n) batch:
  rows' k largest |M_i| (or filter norms) with the constraints' tie rule (lowest index first),
  then v = −τ·M_k/‖M_k‖₂, −τ·sign(M)·1[top k], or −τ·M_S/‖M_S‖_F row by row;
* everything else (and float16/bfloat16 directions) calls its own `lmo`.

The maths is that of `sparsefw.constraints` (tests compare the two); zero directions give v = 0.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Sequence

import torch
from torch import Tensor

from ..constraints import Constraint, GroupKSupportBall, KSparsePolytope, KSupportBall, L2Ball

_STACKED = (KSupportBall, KSparsePolytope, GroupKSupportBall)


def _top_k_rows(a: Tensor, k: int) -> Tensor:
    """Boolean mask of the k largest entries of every row of a ≥ 0; ties go to the lowest index."""
    if k >= a.shape[1]:
        return torch.ones_like(a, dtype=torch.bool)
    threshold = torch.topk(a, k, dim=1, sorted=False).values.amin(1, keepdim=True)
    above, tied = a > threshold, a == threshold
    missing = k - above.sum(1, keepdim=True)
    return above | (tied & (torch.cumsum(tied, 1) <= missing))


def _scale_rows(x: Tensor, radius: float) -> Tensor:
    """−radius · x_b/‖x_b‖ for every leading index b, 0 where x_b = 0."""
    size = torch.linalg.vector_norm(x.flatten(1), dim=1)
    factor = torch.where(size == 0, 0.0, -radius / torch.where(size == 0, 1.0, size))
    return x * factor.view(-1, *([1] * (x.ndim - 1)))


def _stacked_lmo(kind: type, k: int, radius: float, directions: list[Tensor]) -> Tensor:
    """Vertices of B identical regions for B directions, as a (B, *shape) tensor."""
    m = torch.stack(directions)
    if kind is GroupKSupportBall:
        filters = m.reshape(m.shape[0], m.shape[1], -1)
        keep = _top_k_rows(torch.linalg.vector_norm(filters, dim=2), k)
        return _scale_rows(torch.where(keep[:, :, None], filters, 0.0), radius).reshape(m.shape)
    rows = m.reshape(m.shape[0], -1)
    keep = _top_k_rows(rows.abs(), k)
    if kind is KSparsePolytope:
        return torch.where(keep, -radius * torch.sign(rows), 0.0).reshape(m.shape)
    return _scale_rows(torch.where(keep, rows, 0.0), radius).reshape(m.shape)


def _l2_lmos(radii: list[float], directions: list[Tensor]) -> list[Tensor]:
    """−τ·M/‖M‖₂ for every direction at once (one device and dtype; 0 for M = 0)."""
    norms = torch.stack(torch._foreach_norm(directions))
    radii = torch.tensor(radii, dtype=norms.dtype).to(norms.device, non_blocking=True)
    factors = torch.where(norms > 0, -radii / norms, 0.0)
    return list(torch._foreach_mul(directions, list(factors.unbind())))


def lmos(constraints: Sequence[Constraint], directions: Sequence[Tensor]) -> list[Tensor]:
    """[c.lmo(d) for c, d in zip(constraints, directions)], batched where the regions allow."""
    vertices: list[Tensor | None] = [None] * len(constraints)
    l2: dict[tuple, list[int]] = defaultdict(list)
    stacks: dict[tuple, list[int]] = defaultdict(list)
    for i, (c, d) in enumerate(zip(constraints, directions)):
        if d.dtype not in (torch.float32, torch.float64):
            vertices[i] = c.lmo(d)
        elif type(c) is L2Ball:
            l2[(d.dtype, d.device)].append(i)
        elif type(c) in _STACKED:
            stacks[(type(c), c.shape, c.k, c.radius, d.dtype, d.device)].append(i)
        else:
            vertices[i] = c.lmo(d)
    for idx in l2.values():
        for i, v in zip(idx, _l2_lmos([constraints[i].radius for i in idx], [directions[i] for i in idx])):
            vertices[i] = v
    for (kind, _, k, radius, _, _), idx in stacks.items():
        if len(idx) == 1:
            vertices[idx[0]] = constraints[idx[0]].lmo(directions[idx[0]])
            continue
        for i, v in zip(idx, _stacked_lmo(kind, k, radius, [directions[i] for i in idx]).unbind(0)):
            vertices[i] = v
    return vertices
