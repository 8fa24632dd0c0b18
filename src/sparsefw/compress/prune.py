"""Unstructured magnitude pruning (one-shot, no retraining)."""
from __future__ import annotations

import copy
import warnings

import torch
from torch import nn

from ..graph.arguments import check_module
from ._modules import ComposedLayer, is_conv1d

_SCOPES = ("global", "layer")


def prunable_tensors(model: nn.Module, include_bias: bool = False,
                     include_norm: bool = False) -> dict[str, torch.Tensor]:
    """Named tensors magnitude pruning acts on: Conv/Linear/Conv1D weights (+ their biases, + norm-layer
    affine parameters when asked), each shared tensor once."""
    tensors, seen = {}, set()
    for module_name, module in model.named_modules():
        if isinstance(module, ComposedLayer):   # weight and bias derived: its stages are listed
            continue
        if isinstance(module, (nn.modules.conv._ConvNd, nn.Linear)) or is_conv1d(module):
            names = ("weight", "bias") if include_bias else ("weight",)
        elif include_norm and isinstance(module, (nn.modules.batchnorm._BatchNorm, nn.GroupNorm,
                                                  nn.LayerNorm, nn.modules.instancenorm._InstanceNorm)):
            names = ("weight", "bias")
        else:
            continue
        for name in names:
            tensor = getattr(module, name, None)
            if isinstance(tensor, torch.Tensor) and id(tensor) not in seen:
                seen.add(id(tensor))
                tensors[f"{module_name}.{name}" if module_name else name] = tensor
    return tensors


def prune(model: nn.Module, sparsity: float, scope: str = "global", include_bias: bool = False,
          include_norm: bool = False, return_recipe: bool = False):
    """Zero the smallest-magnitude entries of the Conv and Linear weights.

    scope "global": the k = round(sparsity·N) smallest |w| over all N pruned entries together
    (the paper's protocol); scope "layer": round(sparsity·n_ℓ) in every tensor separately.
    Exactly k entries are set to zero (ties broken by `torch.topk`); entries already zero are
    among the smallest, so a tensor ends with max(k, zeros before) zeros.
    BN and biases are left alone unless `include_norm` / `include_bias`.

    Returns a new model (the input is untouched); with `return_recipe`, also a JSON-able recipe
    with the zero count per tensor. A UserWarning says so when no entry changed.
    """
    check_module(model)
    if isinstance(sparsity, bool) or not isinstance(sparsity, (int, float)) or not 0 <= sparsity <= 1:
        raise ValueError(f"sparsity must be a float in [0, 1], got {sparsity!r}")
    if scope not in _SCOPES:
        raise ValueError(f"scope must be one of {_SCOPES}, got {scope!r}")
    pruned = copy.deepcopy(model)
    tensors = prunable_tensors(pruned, include_bias, include_norm)
    if not tensors:
        raise ValueError(f"model {type(model).__name__} has no Conv or Linear weight to prune")
    nonzero_before = sum(int(torch.count_nonzero(t)) for t in tensors.values())
    with torch.no_grad():
        if scope == "global":
            flat = torch.cat([t.detach().abs().flatten().to(torch.float64) for t in tensors.values()])
            mask = _keep_mask(flat, round(sparsity * flat.numel()))
            for tensor, keep in zip(tensors.values(),
                                    mask.split([t.numel() for t in tensors.values()])):
                tensor.mul_(keep.view_as(tensor).to(tensor.device, tensor.dtype))
        else:
            for tensor in tensors.values():
                tensor.mul_(_keep_mask(tensor.abs().flatten(), round(sparsity * tensor.numel()))
                            .view_as(tensor).to(tensor.dtype))
    if sum(int(torch.count_nonzero(t)) for t in tensors.values()) == nonzero_before:
        warnings.warn(f"prune(sparsity={sparsity}, scope={scope!r}) changed nothing: round(sparsity·n) "
                      f"{'of all' if scope == 'global' else 'per tensor, of the'} "
                      f"{sum(t.numel() for t in tensors.values())} prunable entries selects none, "
                      "or only entries that are zero already", stacklevel=2)
    if not return_recipe:
        return pruned
    recipe = {"kind": "prune", "sparsity": float(sparsity), "scope": scope,
              "zeros": {name: int((t == 0).sum()) for name, t in tensors.items()}}
    return pruned, recipe


def _keep_mask(magnitudes: torch.Tensor, n_prune: int) -> torch.Tensor:
    keep = torch.ones_like(magnitudes, dtype=torch.bool)
    if n_prune > 0:
        keep[torch.topk(magnitudes, n_prune, largest=False).indices] = False
    return keep
