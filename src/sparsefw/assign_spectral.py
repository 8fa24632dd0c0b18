"""The operator-norm modes of `constrain` (Scion's regions; measured on transformers, docs/tuning.md
"Training transformers").

    mode                  hidden matrix weights                 head matrix         every other parameter
    "spectral"            SpectralBall                          SpectralBall        L2 ball (the "l2"
    "spectral_polytope"   SpectralPolytope(k) (rank-k spectral  SpectralBall        mode's), Adam direction
                          polytope, low rank; default k ¼)                          (`OTHER_STEP`)

A *matrix weight* is the weight of an nn.Linear, a Conv1D (`assign_linear.output_dim`) or a conv
(matrix view c_out × c_in·kh·kw); the *head* is the last Linear-like layer and weights tied to
another name (`assign_linear.hidden_linear_weights`). The radius of a matrix region is

    τ = spectral_width · √(d_out / d_in)          (d_out output units, d_in = the other dims)

the operator norm of a map that keeps the RMS of its input (Scion), not a multiple of the init norm;
default spectral_width `DEFAULT_SPECTRAL_WIDTH` = 3; raised to the start's gauge where that is larger
(every region holds its start: a polytope with small k may not hold a fresh init's nuclear norm).
Every matrix group carries the fixed Frank-Wolfe step {"lr": fixed_step (`DEFAULT_FIXED_STEP`, 0.02;
`DEFAULT_FINETUNE_STEP`, 0.005, where the radii come from a checkpoint — fine-tuning a trained model:
four times smaller lost 2–4.5 fewer points of the checkpoint's accuracy on two ViTs and kept more at ⅛
rank; on a character-level GPT the two steps were alike, docs/tuning.md "Training transformers"),
"rescale": None}, θ ← (1 − η)θ + η·v, scheduled like any group lr: Scion's constrained update, whose
vertex −τ·UVᵀ (or −τ·U_kV_kᵀ) has every singular value τ, so the layer's gain is set by the radius and by how coherent the last ≈ 1/η vertices are —
and the direction "adam" (`constrain`'s `direction` "auto" in these modes: the LMO takes Adam's
preconditioned direction, AdaSFW; measured better than the momentum for the polytope, alike for the ball).
Every other group (biases, norm γ/β, positional embeddings; not those the step rule gives the fixed
step) takes `OTHER_STEP`: the Adam direction (`optim.adam`) with the gradient-rescaled step of length
α·‖d‖, α = `DEFAULT_OTHER_LR` (3e-3), inside its L2 ball — Adam where the ball is slack, as Scion
trains these tensors. Measured against the optimizer's SGD-like step (docs/tuning.md, "Training
transformers"). fixed_step="optimizer" leaves every group to the optimizer.
"""
from __future__ import annotations

import math

from torch import nn

from .assign_linear import hidden_linear_weights, output_dim
from .constraints import Constraint, SpectralBall, SpectralPolytope

SPECTRAL_MODES = ("spectral", "spectral_polytope")
#: τ = DEFAULT_SPECTRAL_WIDTH · √(d_out/d_in) for every matrix region (module docstring)
DEFAULT_SPECTRAL_WIDTH = 3.0
#: the matrix regions' fixed step when the radii come from a checkpoint (rule "checkpoint", or "auto"
#: finding one): a fine-tune (module docstring)
DEFAULT_FINETUNE_STEP = 0.005
#: the step of the parameters outside the matrix regions (module docstring)
DEFAULT_OTHER_LR = 3e-3
OTHER_STEP = {"direction": "adam", "lr": DEFAULT_OTHER_LR, "rescale": "gradient"}
_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


def matrix_weights(model: nn.Module) -> dict[str, int]:
    """{qualified weight name: its output dim} of the Linear-like and conv layers of `model`."""
    own = {name for name, p in model.named_parameters()}
    out = {}
    for name, module in model.named_modules():
        dim = 0 if isinstance(module, _CONV) else output_dim(module)
        weight = f"{name}.weight" if name else "weight"
        if dim is not None and weight in own and module.weight.dim() >= 2:
            out[weight] = dim
    return out


def spectral_regions(model: nn.Module, mode: str, k: int | float, width: float) -> dict[str, Constraint]:
    """{weight name: region} for every matrix weight of `model` in `mode` (module docstring)."""
    shapes = {name: p.shape for name, p in model.named_parameters()}
    hidden = hidden_linear_weights(model)
    regions = {}
    for name, dim in matrix_weights(model).items():
        shape = shapes[name]
        d_out = shape[dim]
        radius = width * math.sqrt(d_out / (math.prod(shape) // d_out))
        rank = min(shape[0], math.prod(shape) // shape[0])
        is_hidden = name in hidden or len(shape) > 2
        if mode == "spectral_polytope" and is_hidden:
            regions[name] = SpectralPolytope(shape, k=min(k, rank) if isinstance(k, int) else k, radius=radius)
        else:
            regions[name] = SpectralBall(shape, radius=radius)
    return regions
