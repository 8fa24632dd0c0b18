"""`constrain(model, mode)`: the paper's assignment of a feasible region to every parameter.

Radius of every region: τ = width · E‖θ^init‖₂ (`radii.expected_init_norms`, never changing the
model), except the K-sparse polytope, τ = width · E‖θ^init‖₂ / √k (its vertices have L2 norm τ√k).

    mode                   conv weights (Conv1d/2d/3d)      every other trainable parameter
    "k_support"            KSupportBall(k)                  KSupportBall(k)
    "k_sparse"             KSparsePolytope(k)               KSparsePolytope(k)
    "l2"                   L2Ball                           L2Ball
    "group_k_support"      GroupKSupportBall(k) (filters)   L2Ball
    "spectral_k_support"   SpectralKSupportBall(k)          L2Ball
    "nuclear"              NuclearBall                      L2Ball
    "coupled_group_k_support"  one CoupledGroupKSupportBall(k) per shrinkable coupled channel
                           space over its output-side members (conv/Linear rows, biases, BN γ, β;
                           `assign_coupled`; needs example_inputs; radius coupled_width (3) · joint
                           init norm, fixed step coupled_step (0.02))   L2Ball for every other parameter

(Linear weights get L2 balls in the filter and low-rank modes, as in the paper.) With
`bias_and_norm="l2"` every 1-D parameter (biases, BN γ and β) gets an L2 ball whatever the mode —
a departure from the paper for "k_support"/"k_sparse", whose vertices keep only ⌊k·C⌋ of C BN
channels, so every step shrinks all the others; compression never prunes these tensors. By
default (`norm_radius=None`, rule "width" of `DEFAULT_NORM_RADIUS` in every mode) every 1-D
parameter's region has radius width (not a multiple of its initial norm), as in the paper's code,
which does this by accident: its table of initial norms is keyed by tensor shape, so BN β (zero
init, counted as 1) overwrites γ's √C and both get radius width · 1. γ = 1 then starts outside its
k-support ball and is scaled down, and stays small; with these radii k-support keeps far more
accuracy under pruning (BENCHMARKS.md, quality_paper and radius_rule). `norm_radius="init"` gives
1-D parameters width · E‖θ_init‖ like every other tensor (the default before), a number r radius r.
k: a float in
(0, 1] is a fraction of each tensor's structures (entries, filters or ranks), an int a count capped
at that number; default 0.1 for "k_support"/"k_sparse", 0.3 for "group_k_support"/
"spectral_k_support", 0.5 for "coupled_group_k_support" (robust to removing up to about half of
every channel space, BENCHMARKS.md coupled_training); ignored by "l2" and "nuclear". Default width
10 (docs/method.md#reference-results).

Parameters with requires_grad=False are left out. Every parameter outside its region is scaled
onto it in place (`shift_inside`); parameters already inside are not touched.
"""
from __future__ import annotations

import math
import warnings
from typing import Any

import torch
from torch import nn

from .constraints import (Constraint, GroupKSupportBall, KSparsePolytope, KSupportBall, L2Ball, NuclearBall,
                          SpectralKSupportBall, resolve_k)
from .assign_coupled import DEFAULT_COUPLED_STEP, DEFAULT_COUPLED_WIDTH, coupled_regions
from .assign_step import DEFAULT_FIXED_STEP, check_step, fixed_step_parameters
from .graph.capture import CaptureError
from .radii import expected_init_norms

DEFAULT_K = {"k_support": 0.1, "k_sparse": 0.1, "l2": None, "group_k_support": 0.3,
             "spectral_k_support": 0.3, "nuclear": None, "coupled_group_k_support": 0.5}
MODES = tuple(DEFAULT_K)
# Radius rule of every 1-D parameter (biases, norm-layer γ/β): "init" = width · E‖θ_init‖ (every
# other tensor's rule), "width" = width (the paper code's effective rule). "width" everywhere, chosen
# by measurement (BENCHMARKS.md, radius_rule; docs/tuning.md): over 3 seeds it kept as much or more
# at the headline level of each mode; "l2" and "nuclear" follow it for one rule across modes.
NORM_RADIUS_RULES = ("init", "width")
DEFAULT_NORM_RADIUS = dict.fromkeys(DEFAULT_K, "width")
_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


def check_k(k: Any) -> None:
    """ValueError unless k is a fraction in (0, 1] (float) or a count ≥ 1 (int): the one check of k."""
    if isinstance(k, bool) or not isinstance(k, (int, float)):
        raise ValueError(f"k must be a float fraction in (0, 1] or an int count ≥ 1, got k={k!r}")
    if isinstance(k, float) and not 0.0 < k <= 1.0:
        raise ValueError(f"k as a fraction must lie in (0, 1], got k={k!r}")
    if isinstance(k, int) and k < 1:
        raise ValueError(f"k as a count must be ≥ 1, got k={k!r}")


def _capped(k: int | float, structures: int) -> int | float:
    """An int count is capped at the number of structures; a fraction is kept."""
    return min(k, structures) if isinstance(k, int) else k


def check_norm_radius(norm_radius: Any) -> None:
    """ValueError unless norm_radius is None, one of NORM_RADIUS_RULES or a positive finite number."""
    if isinstance(norm_radius, (int, float)) and not isinstance(norm_radius, bool):
        if not math.isfinite(norm_radius) or norm_radius <= 0:
            raise ValueError(f"norm_radius as a number must be positive and finite, got norm_radius={norm_radius!r}")
    elif norm_radius is not None and not (isinstance(norm_radius, str) and norm_radius in NORM_RADIUS_RULES):
        raise ValueError(f"norm_radius must be None, one of {NORM_RADIUS_RULES} or a positive finite number, "
                         f"got norm_radius={norm_radius!r}")


def _norm_radius(mode: str, width: float, norm_radius: Any) -> float | None:
    """The radius of every 1-D region, or None for width · E‖θ_init‖ (rule "init")."""
    check_norm_radius(norm_radius)
    rule = DEFAULT_NORM_RADIUS[mode] if norm_radius is None else norm_radius
    return None if rule == "init" else float(width) if rule == "width" else float(rule)


def _region(mode: str, is_conv_weight: bool, shape: torch.Size, k: int | float | None, scale: float) -> Constraint:
    """The region of one parameter; `scale` = width · E‖θ^init‖₂."""
    n = math.prod(shape)
    if mode == "k_support":
        return KSupportBall(shape, k=_capped(k, n), radius=scale)
    if mode == "k_sparse":
        k = _capped(k, n)
        return KSparsePolytope(shape, k=k, radius=scale / math.sqrt(resolve_k(k, n)))
    if is_conv_weight and mode == "group_k_support":
        return GroupKSupportBall(shape, k=_capped(k, shape[0]), radius=scale)
    if is_conv_weight and mode == "spectral_k_support":
        return SpectralKSupportBall(shape, k=_capped(k, min(shape[0], n // shape[0])), radius=scale)
    if is_conv_weight and mode == "nuclear":
        return NuclearBall(shape, radius=scale)
    return L2Ball(shape, radius=scale)


def constrain(model: nn.Module, mode: str, k: int | float | None = None, width: float = 10.0,
              bias_and_norm: str = "mode", norm_radius: float | str | None = None,
              example_inputs=None, coupled_width: float | None = None,
              coupled_step: float | str | None = None, fixed_step: float | str | None = None) -> list[dict]:
    """Param groups {"params": [p], "constraint": region, "name": qualified name} for `sparsefw.SFW`,
    one per trainable parameter of `model` (shared parameters once), following the table above;
    `bias_and_norm`: "mode" (the table) or "l2" (L2 balls for every 1-D parameter); `norm_radius`:
    the radius of every 1-D parameter's region — None (the mode's rule, `DEFAULT_NORM_RADIUS`),
    "init" (width · E‖θ_init‖), "width" (width) or a positive number.
    Makes the starting point feasible, changing only parameters that lie outside their region.
    "coupled_group_k_support" needs `example_inputs` (for the channel analysis); its groups hold
    several parameters ("name": their names joined by "+") and come after the others; their radius
    is `coupled_width` (None: `DEFAULT_COUPLED_WIDTH`) times the members' joint expected init norm,
    and they carry their own fixed Frank-Wolfe step, "lr": `coupled_step` (None:
    `DEFAULT_COUPLED_STEP`) with "rescale": None, unless coupled_step="optimizer" (the optimizer's
    lr and rescale); see `assign_coupled`. `bias_and_norm`/`norm_radius` apply to the 1-D parameters
    outside its regions.
    Step rule (`assign_step`): the groups of the parameters `assign_step.fixed_step_parameters` finds
    on `example_inputs` carry a fixed Frank-Wolfe step, "lr": `fixed_step` (None: `DEFAULT_FIXED_STEP`)
    with "rescale": None; every other group takes the optimizer's lr and rescale (gradient-rescaled
    by default). fixed_step="optimizer", or no `example_inputs` (with a warning), leaves every group
    to the optimizer."""
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if mode not in DEFAULT_K:
        raise ValueError(f"mode must be one of {MODES}, got mode={mode!r}")
    if isinstance(width, bool) or not isinstance(width, (int, float)) or not math.isfinite(width) or width <= 0:
        raise ValueError(f"width must be a positive finite number, got width={width!r}")
    if bias_and_norm not in ("mode", "l2"):
        raise ValueError(f"bias_and_norm must be 'mode' or 'l2', got bias_and_norm={bias_and_norm!r}")
    norm_radius = _norm_radius(mode, width, norm_radius)
    if k is None:
        k = DEFAULT_K[mode]
    else:
        check_k(k)

    coupled_width, coupled_step = _coupled_options(mode, coupled_width, coupled_step)
    fixed = _fixed_step(model, example_inputs, fixed_step)
    norms = expected_init_norms(model)
    joint, coupled = [], set()
    if mode == "coupled_group_k_support":
        if example_inputs is None:
            raise ValueError("mode='coupled_group_k_support' needs example_inputs (a tensor or tuple of tensors "
                             "to trace the model's channel dependencies), got example_inputs=None")
        state = dict(model.named_parameters())
        for names, region in coupled_regions(model, example_inputs, k, coupled_width, norms):
            params = [state[n] for n in names]
            with torch.no_grad():
                packed = region.pack([p.detach() for p in params])
                inside = region.shift_inside(packed)
                if inside is not packed:
                    for p, new in zip(params, region.unpack(inside)):
                        p.copy_(new)
            step = {} if coupled_step == "optimizer" else {"lr": coupled_step, "rescale": None}
            joint.append({"params": params, "constraint": region, "name": "+".join(names), **step})
            coupled.update(names)
    groups = []
    for name, p in model.named_parameters():
        if not p.requires_grad or name in coupled:
            continue
        module_name, _, attr = name.rpartition(".")
        is_conv_weight = attr == "weight" and isinstance(model.get_submodule(module_name), _CONV)
        region_mode = "l2" if bias_and_norm == "l2" and p.dim() <= 1 else mode
        scale = width * norms[name] if norm_radius is None or p.dim() > 1 else norm_radius
        region = _region(region_mode, is_conv_weight, p.shape, k, scale)
        with torch.no_grad():
            current = p.detach()
            inside = region.shift_inside(current)
            if inside is not current:
                p.copy_(inside)
        step = {"lr": fixed[name], "rescale": None} if name in fixed else {}
        groups.append({"params": [p], "constraint": region, "name": name, **step})
    return groups + joint


def _fixed_step(model: nn.Module, example_inputs, fixed_step: Any) -> dict[str, float]:
    """{parameter name: its fixed Frank-Wolfe step} under `constrain`'s step rule."""
    check_fixed_step(fixed_step)
    if fixed_step == "optimizer":
        return {}
    if example_inputs is None:
        warnings.warn("constrain: without example_inputs the tensors whose scale the model ignores cannot be found, "
                      "so every parameter takes the optimizer's step (gradient-rescaled by default), which decays "
                      "unrenewed weights slowly; pass example_inputs=<an input batch> for the fixed Frank-Wolfe step "
                      "on them (docs/tuning.md, 'The step rule'), or fixed_step='optimizer' to silence this",
                      stacklevel=3)
        return {}
    step = DEFAULT_FIXED_STEP if fixed_step is None else float(fixed_step)
    try:
        names = fixed_step_parameters(model, example_inputs)
    except CaptureError as exc:
        warnings.warn(f"constrain: {exc}; every parameter takes the optimizer's step (gradient-rescaled by "
                      f"default) — the step rule needs a capture of the model (docs/tuning.md, 'The step rule')",
                      stacklevel=3)
        return {}
    return dict.fromkeys(names, step)


def _coupled_options(mode: str, width: Any, step: Any) -> tuple[float | None, float | str | None]:
    """(radius width, step) of the coupled regions, validated; None for the other modes."""
    if mode != "coupled_group_k_support":
        for name, value in (("coupled_width", width), ("coupled_step", step)):
            if value is not None:
                raise ValueError(f"{name} applies to mode 'coupled_group_k_support' only, got {name}={value!r} "
                                 f"with mode={mode!r}")
        return None, None
    width = DEFAULT_COUPLED_WIDTH if width is None else width
    if isinstance(width, bool) or not isinstance(width, (int, float)) or not math.isfinite(width) or width <= 0:
        raise ValueError(f"coupled_width must be a positive finite number, got coupled_width={width!r}")
    step = DEFAULT_COUPLED_STEP if step is None else step
    check_coupled_step(step)
    return float(width), step if step == "optimizer" else float(step)


def check_coupled_step(step: Any) -> None:
    """ValueError unless step is None, 'optimizer' or a Frank-Wolfe step in (0, 1]."""
    check_step(step, "coupled_step")


def check_fixed_step(step: Any) -> None:
    """ValueError unless step is None, 'optimizer' or a Frank-Wolfe step in (0, 1]."""
    check_step(step, "fixed_step")
