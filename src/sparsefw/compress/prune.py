"""Magnitude pruning (one-shot, no retraining): unstructured, or N:M semi-structured; Wanda's
activation-aware scores with calibration inputs (`criteria`)."""
from __future__ import annotations

import copy
import warnings

import torch
from torch import nn

from ..constraints.nm import parse_pattern
from ..graph.arguments import check_module
from . import criteria
from ._modules import ComposedLayer

_SCOPES = ("global", "layer")


def prunable_tensors(model: nn.Module, include_bias: bool = False,
                     include_norm: bool = False) -> dict[str, torch.Tensor]:
    """Named tensors magnitude pruning acts on: Conv/Linear weights (+ their biases, + norm-layer
    affine parameters when asked), each shared tensor once."""
    tensors, seen = {}, set()
    for module_name, module in model.named_modules():
        if isinstance(module, ComposedLayer):   # weight and bias derived: its stages are listed
            continue
        if isinstance(module, (nn.modules.conv._ConvNd, nn.Linear)):
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


def prune(model: nn.Module, sparsity: float | None = None, scope: str = "global", include_bias: bool = False,
          include_norm: bool = False, return_recipe: bool = False, pattern: str | None = None,
          criterion: str = "magnitude", calibration=None):
    """Zero the smallest-magnitude entries of the Conv and Linear weights.

    scope "global": the k = round(sparsity·N) smallest |w| over all N pruned entries together
    (the paper's protocol); scope "layer": round(sparsity·n_ℓ) in every tensor separately.
    Exactly k entries are set to zero (ties broken by `torch.topk`); entries already zero are
    among the smallest, so a tensor ends with max(k, zeros before) zeros.
    BN and biases are left alone unless `include_norm` / `include_bias`.

    `pattern` "N:M" (e.g. "2:4"): keep the N largest scores in every group of M consecutive weights
    along each weight's input dim (`criteria.input_dim`; the groups of `NMKSupportBall`); `sparsity`
    is then None or 1 − N/M, and `scope` does not apply. `criterion` "wanda": scores |W_ij|·‖X_j‖₂
    from the inputs each layer receives on `calibration` (an iterable of input tensors or (inputs, ...)
    tuples), compared within every output unit (or per N:M group with a pattern). Patterns and Wanda
    act on weights only (include_bias / include_norm must stay False).

    Returns a new model (the input is untouched); with `return_recipe`, also a JSON-able recipe
    with the zero count per tensor. A UserWarning says so when no entry changed.
    """
    check_module(model)
    nm = _check_pattern(pattern, sparsity, criterion, calibration, include_bias or include_norm)
    sparsity = 1 - nm[0] / nm[1] if nm is not None and sparsity is None else sparsity
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
        if nm is not None or criterion == "wanda":
            _apply_criterion(pruned, tensors, sparsity, nm, criterion, calibration)
        elif scope == "global":
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
        _warn_unchanged(sparsity, scope, nm, sum(t.numel() for t in tensors.values()))
    if not return_recipe:
        return pruned
    how = {"pattern": f"{nm[0]}:{nm[1]}"} if nm else {}
    how.update({"criterion": criterion} if criterion != "magnitude" else {})
    recipe = {"kind": "prune", "sparsity": float(sparsity), "scope": scope, **how,
              "zeros": {name: int((t == 0).sum()) for name, t in tensors.items()}}
    return pruned, recipe


def _warn_unchanged(sparsity: float, scope: str, nm: tuple[int, int] | None, entries: int) -> None:
    if nm is not None:
        warnings.warn(f"prune(pattern='{nm[0]}:{nm[1]}') changed nothing: the weights are already "
                      f"{nm[0]}:{nm[1]}-sparse", stacklevel=3)
        return
    warnings.warn(f"prune(sparsity={sparsity}, scope={scope!r}) changed nothing: round(sparsity·n) "
                  f"{'of all' if scope == 'global' else 'per tensor, of the'} "
                  f"{entries} prunable entries selects none, "
                  "or only entries that are zero already", stacklevel=3)


def _check_pattern(pattern, sparsity, criterion, calibration, extra: bool) -> tuple[int, int] | None:
    """(N, M) of `pattern` (None without one), after checking prune's pattern/criterion arguments."""
    if criterion not in criteria.CRITERIA:
        raise ValueError(f"criterion must be one of {criteria.CRITERIA}, got criterion={criterion!r}")
    if (criterion == "wanda") != (calibration is not None):
        raise ValueError(f"calibration (input batches) is needed by criterion='wanda' and only by it, got "
                         f"criterion={criterion!r}, calibration={type(calibration).__name__}")
    nm = None if pattern is None else parse_pattern(pattern)
    if (nm is not None or criterion == "wanda") and extra:
        raise ValueError(f"pattern={pattern!r} / criterion={criterion!r} prune weights only: include_bias and "
                         "include_norm must be False")
    if nm is not None and sparsity is not None and (isinstance(sparsity, bool) or not isinstance(sparsity, (int, float))
                                                    or abs(sparsity - (1 - nm[0] / nm[1])) > 1e-9):
        raise ValueError(f"sparsity must be None or 1 − N/M = {1 - nm[0] / nm[1]:g} with pattern={pattern!r}, "
                         f"got sparsity={sparsity!r}")
    if nm is None and sparsity is None:
        raise ValueError("sparsity must be a float in [0, 1] (None only with a pattern), got sparsity=None")
    return nm


def _apply_criterion(model: nn.Module, tensors: dict, sparsity: float, nm, criterion: str, calibration) -> None:
    """Mask the weights of `tensors` in place by `criteria.masks` (their layers found in `model`)."""
    layers = {name: model.get_submodule(name.rpartition(".")[0]) for name in tensors}
    norms = None
    if criterion == "wanda":
        criteria.wanda_layers(layers)
        norms = criteria.activation_norms(model, layers, calibration)
    for name, keep in criteria.masks(layers, sparsity, nm, criterion, norms).items():
        tensors[name].mul_(keep.to(tensors[name].device, tensors[name].dtype))


def _keep_mask(magnitudes: torch.Tensor, n_prune: int) -> torch.Tensor:
    keep = torch.ones_like(magnitudes, dtype=torch.bool)
    if n_prune > 0:
        keep[torch.topk(magnitudes, n_prune, largest=False).indices] = False
    return keep
