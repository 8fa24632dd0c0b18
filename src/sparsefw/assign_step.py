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
"""
from __future__ import annotations

from typing import Any

from torch import nn

from .graph.scale import scale_invariant_parameters

#: η of the fixed Frank-Wolfe step (param-group lr with rescale None), as the coupled regions'
DEFAULT_FIXED_STEP = 0.02


def check_step(step: Any, name: str) -> None:
    """ValueError unless step is None, 'optimizer' or a Frank-Wolfe step in (0, 1]; `name` is the
    argument's name in the message."""
    if step is not None and step != "optimizer" and (isinstance(step, bool) or not isinstance(step, (int, float))
                                                     or not 0 < step <= 1):
        raise ValueError(f"{name} must be a Frank-Wolfe step in (0, 1] or 'optimizer', got {name}={step!r}")


def fixed_step_parameters(model: nn.Module, example_inputs) -> frozenset[str]:
    """Qualified names of the parameters of `model` that take the fixed step (module docstring)."""
    return scale_invariant_parameters(model, example_inputs)
