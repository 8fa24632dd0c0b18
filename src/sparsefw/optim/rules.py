"""The rules every SFW step path shares: the step size, the math dtype, the non-finite checks and
torch's grouping of tensors by device and dtype (the lowest layer of `sparsefw.optim`).

    η = clip(α · coefficient · (‖m‖₂ if rescale uses it) / (‖θ−v‖₂ if rescale == "gradient"), 0, 1)

with coefficient 1 | 1/D | 1 | 2/D for rescale None | "diameter" | "gradient" | "fast_gradient"
(D the region's L2 diameter), so s = 1 | 1/D | ‖m‖/‖θ−v‖ | ‖m‖/(D/2).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.utils._foreach_utils import _group_tensors_by_device_and_dtype

RESCALES = (None, "diameter", "gradient", "fast_gradient")
#: rescale modes whose s has the factor ‖m‖ (and "gradient" alone divides by ‖θ−v‖)
_USES_NORM = ("gradient", "fast_gradient")


def math_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype of step sizes and gaps for parameters of `dtype`: float64 stays, the rest float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def coefficient(rescale: str | None, constraint) -> float:
    """α·s = α · coefficient · (‖m‖ if rescale uses it) / (‖θ−v‖ if rescale == "gradient")."""
    return {None: 1.0, "diameter": 1.0 / constraint.diameter, "fast_gradient": 2.0 / constraint.diameter,
            "gradient": 1.0}[rescale]


def step_size(lr: Tensor | float, coefficient: Tensor | float, norm: Tensor | None, distance: Tensor | None,
              uses_norm: bool | Tensor | None, uses_distance: bool | Tensor | None,
              ok: Tensor | None = None) -> Tensor:
    """η = clip(α · coefficient · (‖m‖ if uses_norm) / (‖θ−v‖ if uses_distance), 0, 1), and 0 where
    `ok` is False; the one formula of every SFW step.

    `lr` (α), `coefficient` (`coefficient`), `norm`, `distance`: 0-dim or per-entry tensors in the
    math dtype (`lr` or `coefficient` may be a python float, not both); `uses_norm` /
    `uses_distance`: True (every entry), False or None (none; then `norm` / `distance` may be None)
    or a per-entry bool vector. A distance 0 (θ = v, where every η
    leaves θ as it is) is replaced by the smallest normal number.
    """
    eta = lr * coefficient
    if uses_norm is True:
        eta = eta * norm
    elif isinstance(uses_norm, Tensor):
        eta = eta * torch.where(uses_norm, norm, 1.0)
    if uses_distance is True or isinstance(uses_distance, Tensor):
        d = distance.clamp_min(torch.finfo(distance.dtype).tiny)
        eta = eta / (d if uses_distance is True else torch.where(uses_distance, d, 1.0))
    eta = eta.clamp(0.0, 1.0)
    return eta if ok is None else torch.where(ok, eta, 0.0)


def is_multi_tensor(constraint) -> bool:
    """Whether `constraint` spans several parameters (`pack`/`unpack`, e.g. CoupledGroupKSupportBall)."""
    return bool(getattr(constraint, "multi_tensor", False))


def by_device_and_dtype(tensors: list[Tensor]) -> dict[tuple, tuple[list[Tensor], list[int]]]:
    """{(device, dtype): (tensors, their positions in `tensors`)}: torch.optim's grouping
    (`_group_tensors_by_device_and_dtype`), called through its kernel — its no_grad wrapper costs
    2 µs a call, which a step (already under no_grad) would pay every time."""
    return {key: (lists[0], indices)
            for key, (lists, indices) in _group_tensors_by_device_and_dtype.__wrapped__([tensors], True).items()}


def finite_vertices(v: Tensor, flags: list[Tensor]) -> Tensor:
    """v with its nan and ±inf entries set to 0, after appending to `flags` whether it had none (a
    0-dim bool on its device): the last line of defence of a step, whose LMOs return finite vertices
    for finite directions. On the CPU a v with a finite sum (one read) is returned as it is and
    nothing is appended; elsewhere the check runs on the device (nothing is read)."""
    if v.device.type == "cpu" and bool(torch.isfinite(v.sum())):
        return v
    finite = torch.isfinite(v)
    flags.append(finite.all())
    return torch.where(finite, v, 0.0)


def finite_mask(grads: list[Tensor], device: torch.device, *, read: bool,
                found_inf: Tensor | None = None) -> bool | Tensor:
    """Whether a step over `grads` may go ahead: no entry is nan or ±inf — or, given GradScaler's
    `found_inf`, the scaler found none (its check serves). read=True: a python bool (one flag read
    per device and dtype); read=False: a 0-dim bool tensor on `device` (nothing is read)."""
    if found_inf is not None:
        return not bool(found_inf) if read else found_inf.to(device, non_blocking=True) == 0
    return _all_finite(grads) if read else _finite_flag(grads, device)


def _all_finite(grads: list[Tensor]) -> bool:
    """Fast test: Σ‖g‖₂ (one `_foreach_norm` per device and dtype, float32 accumulation) is finite
    iff every entry is — unless finite entries beyond ~1e19 overflow it; only then does an exact
    per-tensor test decide."""
    for (_, dtype), (gs, _) in by_device_and_dtype(grads).items():
        norms = torch._foreach_norm(gs, 2, dtype=math_dtype(dtype))
        if not math.isfinite(float(torch.stack(norms).sum())):
            if not all(bool(torch.isfinite(g).all()) for g in gs):
                return False
    return True


def _finite_flag(grads: list[Tensor], device: torch.device) -> Tensor:
    """GradScaler's fused check-and-unscale kernel with scale 1, per device and dtype; nothing read."""
    found = torch.zeros((), dtype=torch.float32, device=device)
    one = torch.ones((), dtype=torch.float32, device=device)
    for (grad_device, _), (gs, _) in by_device_and_dtype(grads).items():
        part = torch.zeros((), dtype=torch.float32, device=grad_device)
        torch._amp_foreach_non_finite_check_and_unscale_(gs, part, one.to(grad_device))
        found = found + part.to(device, non_blocking=True)
    return found == 0


def unscale_(grads: list[Tensor], grad_scale: Tensor) -> None:
    """grads *= 1/scale in place, by the float32 reciprocal GradScaler.unscale_ uses."""
    inverse = grad_scale.double().reciprocal().float()
    for (device, _), (gs, _) in by_device_and_dtype(grads).items():
        torch._foreach_mul_(gs, inverse.to(device, non_blocking=True))
