"""The hidden Linear layers of a model and their structured regions (`constrain(..., linear="structured")`).

A *Linear-like* layer is an `nn.Linear` (weight (out, in): output units along dim 0) or a Hugging
Face-style `Conv1D` (a module of class name "Conv1D" whose 2-D `weight` is stored (in, out) with
`nf` = out and applied as x @ W + b: output units along dim 1). Its weight is *hidden* unless

* the layer is the output head: the last Linear-like module registered (`named_modules` order;
  heads — `classifier`, `lm_head`, `fc` — are registered last by the libraries), or
* the weight is tied to another name (a head sharing the token embedding).

These are the layers `factorize(layers="all")` and coupled `remove_filters` shrink, less the head
and embeddings. With `linear="structured"` a hidden weight W gets the mode's structured region over
its output units u = 1 … m (rows W_u of an nn.Linear, columns of a Conv1D):

    "group_k_support"     ‖(‖W_u‖₂)_u‖_(k) ≤ τ  — GroupKSupportBall (nn.Linear), a one-member
                          CoupledGroupKSupportBall over dim 1 (Conv1D); k capped at m
    "spectral_k_support"  ‖σ(W)‖_(k) ≤ τ        — SpectralKSupportBall (σ does not see the storage
                          order); k capped at min(in, out)
    "nuclear"             ‖σ(W)‖₁ ≤ τ            — NuclearBall

Every other mode, every bias and every non-hidden weight keeps the mode's table (`assign`).
"""
from __future__ import annotations

from torch import nn

from .constraints import (Constraint, CoupledGroupKSupportBall, GroupKSupportBall, NuclearBall,
                          SpectralKSupportBall)
from .graph.capture import tensor_aliases

#: values of `constrain(..., linear=...)`: "l2" = the paper's table (L2 balls), "structured" = above
LINEAR_RULES = ("l2", "structured")
STRUCTURED_MODES = ("group_k_support", "spectral_k_support", "nuclear")


def output_dim(module: nn.Module) -> int | None:
    """The dim of `module.weight` that indexes output units: 0 for nn.Linear, 1 for an (in, out)
    Conv1D, None for any other module."""
    if isinstance(module, nn.Linear):
        return 0
    weight = getattr(module, "weight", None)
    if (type(module).__name__ == "Conv1D" and isinstance(weight, nn.Parameter) and weight.dim() == 2
            and getattr(module, "nf", None) == weight.shape[1]):
        return 1
    return None


def hidden_linear_weights(model: nn.Module) -> dict[str, int]:
    """{qualified weight name: its output dim} of the hidden Linear-like layers of `model`."""
    layers = [(name, dim) for name, module in model.named_modules()
              if (dim := output_dim(module)) is not None]
    aliases = tensor_aliases(model)
    own = {name for name, p in model.named_parameters()}
    return {f"{name}.weight": dim for name, dim in layers[:-1]
            if f"{name}.weight" in own and f"{name}.weight" not in aliases}


def structured_region(mode: str, shape, dim: int, k: int | float, radius: float) -> Constraint:
    """The region of a hidden Linear-like weight of `shape` (output units along `dim`) in `mode`
    (one of STRUCTURED_MODES); an int k is capped at the number of structures."""
    if mode == "group_k_support":
        units = shape[dim]
        k = min(k, units) if isinstance(k, int) else k
        if dim == 0:
            return GroupKSupportBall(shape, k=k, radius=radius)
        return CoupledGroupKSupportBall([shape], [dim], [[[u] for u in range(units)]], k=k, radius=radius)
    if mode == "spectral_k_support":
        return SpectralKSupportBall(shape, k=min(k, min(shape)) if isinstance(k, int) else k, radius=radius)
    if mode == "nuclear":
        return NuclearBall(shape, radius=radius)
    raise ValueError(f"no structured Linear region in mode {mode!r}; modes with one: {STRUCTURED_MODES}")
