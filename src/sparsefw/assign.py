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
    "nm_k_support"         NMKSupportBall(N:M) over groups of M consecutive input channels; every
                           Linear-like weight (nn.Linear, Conv1D: groups along its input dim) too,
                           the head included — the tensors `compress.prune(pattern="N:M")` masks;
                           L2Ball for every other parameter. k: "N:M" (default "2:4"), a fraction κ
                           (N = max(1, ⌊4κ⌋) of M = 4) or a count N (N of M = 4)
    "spectral"             SpectralBall on every matrix weight (Linear, Conv1D, conv), radius
                           spectral_width (3) · √(d_out/d_in), fixed step,    L2Ball, Adam direction
                           Adam direction (AdaSFW)
    "spectral_polytope"    SpectralPolytope(k) (rank-k spectral polytope) on hidden matrix weights,
                           SpectralBall on the head; as "spectral" otherwise (`assign_spectral`)

Linear layers (`linear`, default "structured", `assign_linear`): hidden Linear and (in, out)-stored
Conv1D weights — those `remove_filters(coupled=True)`/`factorize(layers="all")` compress, not the
output head or embeddings — get the mode's structured region over their output units in the filter
and low-rank modes (the table's conv column); `linear="l2"` gives them L2 balls, the paper's table
(measured on the MLP task, docs/tuning.md "Starting points and Linear layers"). With
`bias_and_norm="l2"` every 1-D parameter (biases, BN γ and β) gets an L2 ball whatever the mode —
a departure from the paper for "k_support"/"k_sparse", whose vertices keep only ⌊k·C⌋ of C BN
channels, so every step shrinks all the others; compression never prunes these tensors. By
default (`norm_radius=None`, rule "width" of `DEFAULT_NORM_RADIUS` in every mode) every 1-D
parameter's region has radius width (not a multiple of its initial norm), as in the paper's code,
which does this by accident (its table of initial norms is keyed by tensor shape, so BN β
overwrites γ's √C). `norm_radius="init"` gives 1-D parameters width · E‖θ_init‖ like every other
tensor, a number r radius r. k: a float in
(0, 1] is a fraction of each tensor's structures (entries, filters or ranks), an int a count capped
at that number; default 0.1 for "k_support"/"k_sparse", 0.3 for "group_k_support"/
"spectral_k_support", 0.25 for "spectral_polytope", 0.5 for "coupled_group_k_support" (robust to
removing up to about half of every channel space, BENCHMARKS.md coupled_training); ignored by "l2",
"nuclear" and "spectral". Default width
10 (docs/method.md#reference-results).

Every region holds its start: τ ← max(τ, g(θ)), g the region's gauge (x ∈ C ⇔ g(x) ≤ τ; the K-sparse
polytope's too) at the tensor's current value θ, so `constrain` never changes what the model
computes — unless asked: a `norm_radius` given explicitly (a number, "width" or "init") sets the 1-D
radii as given, and a tensor outside is scaled onto its region. `norm_radius="width"` is the paper
code's rule with its shrink: BN γ = 1 (k-support norm C/√k > width) scaled down at set-up (the
default before issue 24, which made k-support robust on BN nets; docs/tuning.md).

Radius rules (`radius_rule`): "init" is the above, made for a model at its default initialisation;
"checkpoint" gives every region τ = width · g(θ) — radii from the weights the model has (width ≥ 1
holds the start); a tensor that is 0 keeps the "init" radius; an explicit `norm_radius` still sets
every 1-D radius. "auto" (default) is "checkpoint" where a norm layer's γ ≠ 1 or β ≠ 0
(`radii.moved_norm_parameters`: trained weights; every library starts them at exactly 1 and 0), else
"init" (fresh models, and models without norm layers, which it cannot tell apart).

Parameters with requires_grad=False are left out. Every parameter outside its region is scaled
onto it in place (`shift_inside`), and one `RescaledWarning` lists each (name, factor);
parameters already inside are not touched.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .constraints import (Constraint, GroupKSupportBall, KSparsePolytope, KSupportBall, L2Ball, NMKSupportBall,
                          NuclearBall, SpectralKSupportBall, parse_pattern, resolve_k)
from .assign_coupled import DEFAULT_COUPLED_STEP, DEFAULT_COUPLED_WIDTH, coupled_regions
from .assign_linear import LINEAR_RULES, STRUCTURED_MODES, hidden_linear_weights, structured_region
from .assign_spectral import (DEFAULT_FINETUNE_STEP, DEFAULT_SPECTRAL_WIDTH, OTHER_STEP, SPECTRAL_MODES,
                              matrix_weights, spectral_regions)
from .assign_step import DEFAULT_FIXED_STEP, check_step, fixed_step_parameters, resolve_direction
from .constraints.base import check_positive
from .graph.capture import CaptureError
from .optim.sharded import full_value, is_sharded
from .radii import expected_init_norms, moved_norm_parameters

DEFAULT_K = {"k_support": 0.1, "k_sparse": 0.1, "l2": None, "group_k_support": 0.3,
             "spectral_k_support": 0.3, "nuclear": None, "coupled_group_k_support": 0.5, "nm_k_support": "2:4",
             "spectral": None, "spectral_polytope": 0.25}
MODES = tuple(DEFAULT_K)
# Radius rule of every 1-D parameter (biases, norm-layer γ/β): "init" = width · E‖θ_init‖ (every
# other tensor's rule), "width" = width (the paper code's effective rule). "width" everywhere, chosen
# by measurement (BENCHMARKS.md, radius_rule; docs/tuning.md): over 3 seeds it kept as much or more
# at the headline level of each mode; "l2" and "nuclear" follow it for one rule across modes.
NORM_RADIUS_RULES = ("init", "width")
DEFAULT_NORM_RADIUS = dict.fromkeys(DEFAULT_K, "width")
_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
#: values of `constrain(..., radius_rule=...)` (module docstring, "Radius rules")
RADIUS_RULES = ("init", "checkpoint", "auto")
DEFAULT_RADIUS_RULE = "auto"
#: regions of hidden Linear layers in the filter and low-rank modes (`LINEAR_RULES`, docstring above)
DEFAULT_LINEAR = "structured"


def check_k(k: Any) -> None:
    """ValueError unless k is a fraction in (0, 1] (float), a count ≥ 1 (int) or an N:M pattern
    ("2:4", mode "nm_k_support" only): the one check of k."""
    if isinstance(k, str):
        try:
            parse_pattern(k)
        except ValueError:
            raise ValueError(f"k as a string must be an N:M pattern such as '2:4' (1 ≤ N ≤ M), "
                             f"got k={k!r}") from None
        return
    if isinstance(k, bool) or not isinstance(k, (int, float)):
        raise ValueError(f"k must be a float fraction in (0, 1], an int count ≥ 1 or an 'N:M' pattern, got k={k!r}")
    if isinstance(k, float) and not 0.0 < k <= 1.0:
        raise ValueError(f"k as a fraction must lie in (0, 1], got k={k!r}")
    if isinstance(k, int) and k < 1:
        raise ValueError(f"k as a count must be ≥ 1, got k={k!r}")


def nm_pattern(k: int | float | str) -> str:
    """k of mode "nm_k_support" as "N:M": a pattern as given; a fraction κ → max(1, ⌊4κ⌋):4; a
    count N → N:4 (N ≤ 4). k must have passed `check_k`."""
    if isinstance(k, str):
        return "{}:{}".format(*parse_pattern(k))
    if isinstance(k, float):
        return f"{max(1, math.floor(4 * k))}:4"
    if k > 4:
        hint = " (YAML 1.1 reads an unquoted N:M as a base-60 number, 2:4 as 124: write k: '2:4')" if k >= 60 else ""
        raise ValueError(f"k as a count in mode 'nm_k_support' is N of M = 4 and must lie in [1, 4], got k={k!r}{hint}")
    return f"{k}:4"


def mode_k(mode: str, k: Any) -> int | float | str | None:
    """constrain's k for `mode`, validated: the mode's default for None, an 'N:M' pattern in mode
    "nm_k_support" (`nm_pattern`), and a pattern only there."""
    if k is None:
        return DEFAULT_K[mode]
    check_k(k)
    if mode == "nm_k_support":
        return nm_pattern(k)
    if isinstance(k, str):
        raise ValueError(f"k as an 'N:M' pattern applies to mode 'nm_k_support' only, got k={k!r} with mode={mode!r}")
    return k


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


@dataclass(frozen=True)
class _Rules:
    """What decides the region of one parameter (`constrain`'s arguments, resolved)."""

    mode: str
    k: int | float | str        # an "N:M" pattern in mode "nm_k_support"
    width: float
    bias_and_norm: str
    norm_radius: float | None   # the radius of every 1-D region, None for width · E‖θ_init‖
    explicit_norm: bool         # norm_radius was given (its radius then holds for 1-D tensors under any rule)
    radius_rule: str
    dims: dict[str, int]        # hidden Linear-like weights under linear="structured": their output dim;
                                # mode "nm_k_support": every conv and Linear-like weight: its input dim
    norms: dict[str, float]     # E‖θ_init‖₂

    def region(self, model: nn.Module, name: str, p: torch.Tensor) -> Constraint:
        """The region of parameter `name`, its radius set by the radius rule (module docstring)."""
        module_name, _, attr = name.rpartition(".")
        module = model.get_submodule(module_name)
        kind = self.dims.get(name, "conv" if attr == "weight" and isinstance(module, _CONV) else None)
        one_d = p.dim() <= 1
        region_mode = "l2" if self.bias_and_norm == "l2" and one_d else self.mode
        scale = self.width * self.norms[name] if self.norm_radius is None or not one_d else self.norm_radius
        region = _region(region_mode, kind, p.shape, self.k, scale)
        if not (one_d and self.explicit_norm):     # an asked norm_radius holds as given
            _set_radius(region, [p], self.radius_rule, self.width)
        return region


def _region(mode: str, kind: str | int | None, shape: torch.Size, k: int | float | None, scale: float) -> Constraint:
    """The region of one parameter; `kind`: "conv" (a conv weight), an int (a hidden Linear-like
    weight: its output dim, `assign_linear`; mode "nm_k_support": a weight's input dim) or None;
    `scale` = width · E‖θ^init‖₂."""
    n = math.prod(shape)
    if mode == "nm_k_support" and isinstance(kind, int):
        return NMKSupportBall(shape, *parse_pattern(k), radius=scale, dim=kind)
    if mode == "k_support":
        return KSupportBall(shape, k=_capped(k, n), radius=scale)
    if mode == "k_sparse":
        k = _capped(k, n)
        return KSparsePolytope(shape, k=k, radius=scale / math.sqrt(resolve_k(k, n)))
    if isinstance(kind, int) and mode in STRUCTURED_MODES:
        return structured_region(mode, shape, kind, k, scale)
    if kind == "conv" and mode == "group_k_support":
        return GroupKSupportBall(shape, k=_capped(k, shape[0]), radius=scale)
    if kind == "conv" and mode == "spectral_k_support":
        return SpectralKSupportBall(shape, k=_capped(k, min(shape[0], n // shape[0])), radius=scale)
    if kind == "conv" and mode == "nuclear":
        return NuclearBall(shape, radius=scale)
    return L2Ball(shape, radius=scale)


def _point(region: Constraint, params: list[torch.Tensor]) -> torch.Tensor:
    """The point of `region` the parameters make (packed for a region over several tensors; FSDP2
    DTensors all-gathered, once per region at set-up)."""
    values = [full_value(p.detach()) for p in params]
    return region.pack(values) if getattr(region, "multi_tensor", False) else values[0]


def _set_radius(region: Constraint, params: list[torch.Tensor], rule: str, width: float) -> None:
    """Rule "checkpoint": τ = width · g, g the start's gauge in the region (τ kept where g = 0); rule
    "init" keeps the radius the region was built with; either way τ ≥ g (the region holds its start)."""
    with torch.no_grad():
        gauge = float(region.norm(_point(region, params)))
    if rule == "checkpoint" and gauge > 0:
        region.radius = width * gauge
    region.radius = max(region.radius, gauge)


def _place(region: Constraint, params: list[torch.Tensor], name: str, rescaled: list[tuple[str, float]]) -> None:
    """Scale the parameters onto `region` if they lie outside it, appending (name, factor) to `rescaled`."""
    with torch.no_grad():
        point = _point(region, params)
        inside = region.shift_inside(point)
        if inside is point:
            return
        factor = region.radius / float(region.norm(point))
        rescaled.append((name, factor))
        if any(is_sharded(p) for p in params):      # shift_inside scales radially: on the local shards
            for p in params:
                p.mul_(factor)
            return
        new = region.unpack(inside) if getattr(region, "multi_tensor", False) else [inside]
        for p, value in zip(params, new):
            p.copy_(value)


def _warn_rescaled(rescaled: list[tuple[str, float]]) -> None:
    """One warning naming every tensor scaled at set-up and its factor."""
    if not rescaled:
        return
    listed = ", ".join(f"{name} ×{factor:.4g}" for name, factor in rescaled)
    warnings.warn(f"constrain: {len(rescaled)} tensor(s) lay outside their regions and were scaled onto them, "
                  f"changing what the model computes: {listed}. radius_rule='checkpoint' gives every region "
                  f"width times its tensor's own gauge, so that none is scaled", RescaledWarning, stacklevel=3)


class RescaledWarning(UserWarning):
    """`constrain` scaled tensors of the model onto their regions (the message lists them)."""


def constrain(model: nn.Module, mode: str, k: int | float | None = None, width: float = 10.0,
              bias_and_norm: str = "mode", norm_radius: float | str | None = None,
              example_inputs=None, coupled_width: float | None = None,
              coupled_step: float | str | None = None, fixed_step: float | str | None = None,
              radius_rule: str = DEFAULT_RADIUS_RULE, linear: str = DEFAULT_LINEAR,
              spectral_width: float | None = None, direction: str = "auto") -> list[dict]:
    """Param groups {"params": [p], "constraint": region, "name": qualified name} for `sparsefw.SFW`,
    one per trainable parameter of `model` (shared parameters once), following the table above;
    `bias_and_norm`: "mode" (the table) or "l2" (L2 balls for every 1-D parameter); `norm_radius`:
    the radius of every 1-D parameter's region — None (the mode's rule, `DEFAULT_NORM_RADIUS`, held at
    the start's gauge), or asked: "init" (width · E‖θ_init‖), "width" (width) or a positive number.
    `radius_rule`: "init" (radii from the expected init norm, above), "checkpoint" (τ = width ·
    the tensor's current gauge in its region) or "auto" (default: one of the two, by
    `radii.moved_norm_parameters`). Every region holds its start (τ ≥ the start's gauge) except the
    1-D regions of an asked `norm_radius`.
    `linear`: "structured" (default: hidden Linear and Conv1D weights get the mode's structured
    region, `assign_linear`) or "l2" (the paper's table); mode "nm_k_support" gives every conv and
    Linear-like weight its N:M region whatever `linear` says (k: "N:M", `nm_pattern`).
    A parameter outside its region (an asked norm_radius) is scaled onto it, and one warning
    (`RescaledWarning`) names each and its factor.
    "coupled_group_k_support" needs `example_inputs` (for the channel analysis); its groups hold
    several parameters ("name": their names joined by "+") and come after the others; their radius
    is `coupled_width` (None: `DEFAULT_COUPLED_WIDTH`) times the members' joint expected init norm
    (rule "checkpoint": times their joint gauge), and they carry their own fixed Frank-Wolfe step,
    "lr": `coupled_step` (None: `DEFAULT_COUPLED_STEP`) with "rescale": None, unless
    coupled_step="optimizer" (the optimizer's lr and rescale); see `assign_coupled`.
    `bias_and_norm`/`norm_radius` apply to the 1-D parameters outside its regions.
    Step rule (`assign_step`): the groups of the parameters `assign_step.fixed_step_parameters` finds
    on `example_inputs` carry a fixed Frank-Wolfe step, "lr": `fixed_step` (None: `DEFAULT_FIXED_STEP`)
    with "rescale": None; every other group takes the optimizer's lr and rescale (gradient-rescaled
    by default). fixed_step="optimizer", or no `example_inputs` (with a warning), leaves every group
    to the optimizer.
    Modes "spectral" / "spectral_polytope" (`assign_spectral`): every matrix weight's region has radius
    `spectral_width` (None: `DEFAULT_SPECTRAL_WIDTH`) · √(d_out/d_in) (rule "checkpoint": times its
    gauge; at least the start's gauge) and its group the fixed step `fixed_step` (None:
    `DEFAULT_FIXED_STEP`, from a checkpoint `DEFAULT_FINETUNE_STEP`; "optimizer": the optimizer's),
    with or without example_inputs; `width` sizes the other parameters' L2 balls.
    `direction` (`assign_step.resolve_direction`): "momentum", "adam" or "auto" (default: "adam" in the
    spectral modes, else "momentum"). "adam": every LMO takes Adam's direction (group key
    "direction") and every group outside the spectral matrix regions `assign_spectral.OTHER_STEP`
    (the gradient-rescaled step of length 3e-3·‖d‖, replacing the fixed and coupled steps);
    "momentum" in the spectral modes: the matrix groups keep their fixed step with the momentum, the
    others take the optimizer's step."""
    _check_arguments(model, mode, width, bias_and_norm, radius_rule, linear)
    explicit_norm = norm_radius is not None
    norm_radius = _norm_radius(mode, width, norm_radius)
    k = mode_k(mode, k)
    spectral = mode in SPECTRAL_MODES
    asked = fixed_step == "optimizer" if spectral else fixed_step is not None or coupled_step is not None
    adam = resolve_direction(direction, spectral, asked) == "adam"
    coupled_width, coupled_step = _coupled_options(mode, coupled_width, coupled_step)
    fixed = {} if adam and not spectral else _fixed_step(model, example_inputs, fixed_step)  # adam: none
    norms = expected_init_norms(model)
    if radius_rule == "auto":
        radius_rule = "checkpoint" if moved_norm_parameters(model) else "init"
    if mode == "nm_k_support":              # N:M groups run along every conv and Linear-like weight's inputs
        dims = {weight: 1 - out for weight, out in matrix_weights(model).items()}
    else:
        dims = hidden_linear_weights(model) if linear == "structured" and mode in STRUCTURED_MODES else {}
    rules = _Rules(mode, k, float(width), bias_and_norm, norm_radius, explicit_norm, radius_rule, dims, norms)
    rescaled: list[tuple[str, float]] = []
    joint = _coupled_groups(model, rules, example_inputs, coupled_width, coupled_step, rescaled)
    coupled = {name for g in joint for name in g["name"].split("+")}
    matrices = _spectral_setup(model, mode, k, spectral_width, fixed_step, radius_rule == "checkpoint")
    groups = [_single_group(model, name, p, rules, matrices, fixed, adam, rescaled)
              for name, p in model.named_parameters() if p.requires_grad and name not in coupled]
    _warn_rescaled(rescaled)
    if adam:                               # coupled groups: mode coupled_group_k_support only
        for group in joint:
            group.update(OTHER_STEP)
    return groups + joint


def _single_group(model: nn.Module, name: str, p: torch.Tensor, rules: _Rules, matrices: "_Matrices",
                  fixed: dict[str, float], adam: bool, rescaled: list[tuple[str, float]]) -> dict:
    """The param group of parameter `name`: its region (holding p) and its step keys (`adam`: the
    direction "adam" resolved by `constrain`)."""
    region = matrices.get(name)
    if region is None:
        region = rules.region(model, name, p)
    else:
        _set_radius(region, [p], rules.radius_rule, matrices.width)
    _place(region, [p], name, rescaled)
    step = {"lr": fixed[name], "rescale": None} if name in fixed else {}
    if name in matrices and matrices.step is not None:
        step = {"lr": matrices.step, "rescale": None, **({"direction": "adam"} if adam else {})}
    elif adam and name not in fixed:       # adam: no fixed step outside the spectral modes, matrix steps in them
        step = dict(OTHER_STEP)
    return {"params": [p], "constraint": region, "name": name, **step}


class _Matrices(dict):
    """{weight name: region} of the spectral modes, the width their radii were built with and their
    fixed step (None: the optimizer's, and every other group's too)."""

    width: float = DEFAULT_SPECTRAL_WIDTH
    step: float | None = None


def _spectral_setup(model: nn.Module, mode: str, k: Any, width: Any, step: Any, checkpoint: bool) -> _Matrices:
    """The matrix regions of the spectral modes and their step (`checkpoint`: radii from a checkpoint, a
    fine-tune); none for the others, where `spectral_width` must be None."""
    if mode not in SPECTRAL_MODES:
        if width is not None:
            raise ValueError(f"spectral_width applies to modes {SPECTRAL_MODES} only, got spectral_width={width!r} "
                             f"with mode={mode!r}")
        return _Matrices()
    width = DEFAULT_SPECTRAL_WIDTH if width is None else width
    check_positive("spectral_width", width)
    matrices = _Matrices(spectral_regions(model, mode, k, float(width)))
    matrices.width = float(width)
    default = DEFAULT_FINETUNE_STEP if checkpoint else DEFAULT_FIXED_STEP
    matrices.step = None if step == "optimizer" else default if step is None else float(step)
    return matrices


def _check_arguments(model: Any, mode: Any, width: Any, bias_and_norm: Any, radius_rule: Any, linear: Any) -> None:
    """ValueError naming the first bad argument of `constrain` (k, norm_radius's value and the
    coupled options are checked where they are resolved)."""
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if mode not in DEFAULT_K:
        raise ValueError(f"mode must be one of {MODES}, got mode={mode!r}")
    check_positive("width", width)
    if bias_and_norm not in ("mode", "l2"):
        raise ValueError(f"bias_and_norm must be 'mode' or 'l2', got bias_and_norm={bias_and_norm!r}")
    if not isinstance(radius_rule, str) or radius_rule not in RADIUS_RULES:
        raise ValueError(f"radius_rule must be one of {RADIUS_RULES}, got radius_rule={radius_rule!r}")
    if not isinstance(linear, str) or linear not in LINEAR_RULES:
        raise ValueError(f"linear must be one of {LINEAR_RULES}, got linear={linear!r}")


def _coupled_groups(model: nn.Module, rules: _Rules, example_inputs, width: float | None, step: Any,
                    rescaled: list[tuple[str, float]]) -> list[dict]:
    """The param groups of the coupled regions (mode "coupled_group_k_support"; else none)."""
    if rules.mode != "coupled_group_k_support":
        return []
    if example_inputs is None:
        raise ValueError("mode='coupled_group_k_support' needs example_inputs (a tensor or tuple of tensors "
                         "to trace the model's channel dependencies), got example_inputs=None")
    state = dict(model.named_parameters())
    out = []
    for names, region in coupled_regions(model, example_inputs, rules.k, width, rules.norms):
        params = [state[n] for n in names]
        _set_radius(region, params, rules.radius_rule, width)
        _place(region, params, "+".join(names), rescaled)
        extra = {} if step == "optimizer" else {"lr": step, "rescale": None}
        out.append({"params": params, "constraint": region, "name": "+".join(names), **extra})
    return out


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
    check_positive("coupled_width", width)
    step = DEFAULT_COUPLED_STEP if step is None else step
    check_coupled_step(step)
    return float(width), step if step == "optimizer" else float(step)


def check_coupled_step(step: Any) -> None:
    """ValueError unless step is None, 'optimizer' or a Frank-Wolfe step in (0, 1]."""
    check_step(step, "coupled_step")


def check_fixed_step(step: Any) -> None:
    """ValueError unless step is None, 'optimizer' or a Frank-Wolfe step in (0, 1]."""
    check_step(step, "fixed_step")
