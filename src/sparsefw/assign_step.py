"""The step rule of `constrain`: which parameters take a fixed Frank-Wolfe step.

Two step sizes move θ ← (1 − η)·θ + η·v (v the region's vertex for the momentum m):

* gradient-rescaled (the optimizer's default): η = α·‖m‖/‖θ − v‖, a step of SGD's length α‖m‖.
  The scale of θ follows the loss, but in a wide region η is tiny, so weight the vertices stop
  renewing decays by (1 − η) per step only slowly — and that decay is what compression-robustness is;
* fixed: η = `DEFAULT_FIXED_STEP` (scheduled like any lr), so unrenewed weight decays by (1 − η) per
  step whatever the radius or gradient scale; θ becomes a moving average of the last ≈ 1/η vertices,
  whose norm is set by how coherent those vertices are, not by the loss.

The fixed step is therefore safe only where the model's function ignores the scale of θ: weights
whose layer feeds a normalisation, and the γ, β of a normalisation whose output only such layers
read (`graph.scale.scale_invariant_parameters`). Elsewhere — nets without normalisation, MLPs,
classifier heads — a fixed step toward vertices of radius width × the init norm sets each layer's
gain by the vertices' coherence: the layers shrink or grow until the net stops training (measured:
docs/tuning.md, "The step rule"). Those parameters keep the gradient-rescaled step.

Direction (`constrain(..., direction=...)`): "momentum" feeds every LMO the optimizer's momentum and
keeps the steps above; "adam" feeds it Adam's preconditioned direction d = m̂/(√v̂ + ε) (AdaSFW,
`optim.adam`) and gives every group outside the spectral modes' matrix regions the gradient-rescaled
step of length α·‖d‖, α = 3e-3 (`assign_spectral.OTHER_STEP`: Adam's step length, inside the region).
"auto" (default) is "adam" in the spectral modes and "momentum" in the others, transformers
included: measured on a ViT and a character-level GPT, Adam's step raised dense accuracy (ViT +4.4
points in k_support, GPT perplexity 13.8 → 9.7) but took away the robustness the mode trains for
(ViT at 90 % sparsity 0.99 → 0.40 kept, coupled mode at half the heads and FFN units 0.99 → 0.84;
docs/tuning.md "Training transformers"). Not measured why; a likely cause is that Adam's step
follows the loss closely, so weights no vertex renews decay less than under the SGD-like step. An
asked `fixed_step` or `coupled_step` outside the spectral modes, or `fixed_step="optimizer"` in
them, is kept by "momentum" only.
"""
from __future__ import annotations

from typing import Any

from torch import nn

from .graph.scale import scale_invariant_parameters
from .optim.adam import DIRECTIONS as OPTIMIZER_DIRECTIONS

#: η of the fixed Frank-Wolfe step (param-group lr with rescale None), as the coupled regions'
DEFAULT_FIXED_STEP = 0.02
#: values of `constrain(..., direction=...)` (module docstring)
DIRECTIONS = ("auto", *OPTIMIZER_DIRECTIONS)


def check_step(step: Any, name: str) -> None:
    """ValueError unless step is None, 'optimizer' or a Frank-Wolfe step in (0, 1]; `name` is the
    argument's name in the message."""
    if step is not None and step != "optimizer" and (isinstance(step, bool) or not isinstance(step, (int, float))
                                                     or not 0 < step <= 1):
        raise ValueError(f"{name} must be a Frank-Wolfe step in (0, 1] or 'optimizer', got {name}={step!r}")


def fixed_step_parameters(model: nn.Module, example_inputs) -> frozenset[str]:
    """Qualified names of the parameters of `model` that take the fixed step (module docstring)."""
    return scale_invariant_parameters(model, example_inputs)


def resolve_direction(direction: Any, spectral: bool, asked_step: bool) -> str:
    """"momentum" or "adam" for `constrain`'s `direction` (module docstring); `spectral`: a spectral
    mode; `asked_step`: the caller asked steps that only the momentum direction keeps (outside the
    spectral modes fixed_step or coupled_step, in them fixed_step="optimizer")."""
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS}, got direction={direction!r}")
    if direction == "adam" and asked_step:
        raise ValueError("direction='adam' sets the steps of the groups (Adam's length, "
                         "assign_spectral.OTHER_STEP); the fixed_step or coupled_step asked applies with "
                         "direction='momentum' only")
    if direction != "auto":
        return direction
    return "adam" if spectral and not asked_step else "momentum"
