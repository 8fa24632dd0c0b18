"""Per-layer pruning masks for `prune(pattern=..., criterion=...)`: N:M semi-structured and Wanda.

Scores. "magnitude": |W_ij|. "wanda" (Sun et al. 2023, "A simple and effective pruning approach
for large language models"): |W_ij|·‖X_j‖₂, with X_j the values input feature j of the layer took
over all calibration inputs (every batch row and token; for a conv, feature j is an (input channel,
kernel offset) column of the unfolded input), gathered by forward hooks in one pass of the dense
model (the paper's code recomputes the activations block by block on the partly pruned model).
The calibration batches must be a random sample: class-sorted data scores for one class only.

Comparison groups. With a pattern "N:M": the groups of M consecutive weights along the layer's
input dim (`input_dim`), exactly the groups of `constraints.NMKSupportBall` (one source of truth),
keeping the N best scores in each (ties: lowest index). Without a pattern (Wanda only): every
output unit's weights, keeping the round((1 − s)·row) best — Wanda's per-output comparison.
"""
from __future__ import annotations

import warnings
from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from ..constraints.nm import group_view, ungroup
from ..constraints._ops import top_k_mask_rows
from ._modules import is_conv1d

CRITERIA = ("magnitude", "wanda")
_CONV_NO_TRANSPOSE = (nn.Conv1d, nn.Conv2d)


def input_dim(module: nn.Module) -> int:
    """The dim of `module.weight` that indexes its inputs: 1 for nn.Linear and convs (out, in, ...),
    0 for transposed convs (in, out, ...) and (in, out) Conv1D."""
    if is_conv1d(module) or isinstance(module, nn.modules.conv._ConvTransposeNd):
        return 0
    if isinstance(module, (nn.Linear, nn.modules.conv._ConvNd)):
        return 1
    raise ValueError(f"no input dim known for a {type(module).__name__} weight")


def nm_mask(scores: torch.Tensor, n: int, m: int, dim: int) -> torch.Tensor:
    """Boolean mask of `scores`' shape: the n largest scores in every run of m consecutive entries
    along `dim` (a shorter last run keeps min(n, its length)); ties go to the lowest index."""
    keep = top_k_mask_rows(group_view(scores, dim, m), n)     # a padded 0 loses every tie (higher index)
    return ungroup(keep, scores.shape, dim)


def row_mask(scores: torch.Tensor, sparsity: float, out_dim: int) -> torch.Tensor:
    """Boolean mask keeping, in every slice along `out_dim` (one output unit's weights), all but its
    round(sparsity · slice size) smallest scores (ties: the lowest index is kept)."""
    rows = scores.movedim(out_dim, 0).reshape(scores.shape[out_dim], -1)
    keep = rows.shape[1] - round(sparsity * rows.shape[1])
    mask = top_k_mask_rows(rows, keep) if keep > 0 else torch.zeros_like(rows, dtype=torch.bool)
    return mask.reshape(scores.movedim(out_dim, 0).shape).movedim(0, out_dim)


def activation_norms(model: nn.Module, layers: dict[str, nn.Module], batches: Iterable) -> dict[str, torch.Tensor]:
    """{weight name: ‖X_j‖₂ per weight entry's input feature, broadcastable to the weight} for the
    `layers` ({weight name: module}; nn.Linear, Conv1D, Conv1d, Conv2d), from one no-grad pass of
    `model` in eval mode over `batches` (tensors or (inputs, ...) tuples, as a DataLoader yields);
    a layer the pass never calls is left out, with a warning (`masks` scores it by magnitude)."""
    squares: dict[str, torch.Tensor] = {}

    def hook(name, module):
        def record(_, inputs, __):
            s = _input_squares(module, inputs[0].detach().to(torch.float64))
            squares[name] = s if name not in squares else squares[name] + s
        return record

    handles = [module.register_forward_hook(hook(name, module)) for name, module in layers.items()]
    was_training = model.training
    device = next(model.parameters()).device
    try:
        model.eval()
        with torch.no_grad():
            for batch in batches:
                model((batch[0] if isinstance(batch, (tuple, list)) else batch).to(device))
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    missing = [name for name in layers if name not in squares]
    if len(missing) == len(layers):
        raise ValueError("calibration reached no layer to score (empty batches?): no activations to score with")
    if missing:
        warnings.warn(f"criterion='wanda': the forward pass never called the layers of {missing} (e.g. "
                      "nn.MultiheadAttention's out_proj, used through its functional form): they are pruned "
                      "by magnitude", stacklevel=3)
    return {name: _as_weight_shape(layers[name], squares[name].sqrt()) for name in layers if name in squares}


def _input_squares(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Σ over calibration rows of x_j² per input feature j of `module` (a conv: per unfolded column)."""
    if not isinstance(module, _CONV_NO_TRANSPOSE):
        return (x.reshape(-1, x.shape[-1]) ** 2).sum(0)
    one_d = isinstance(module, nn.Conv1d)
    if module.padding_mode != "zeros" or isinstance(module.padding, str) or one_d:
        x = F.pad(x, module._reversed_padding_repeated_twice,
                  mode="constant" if module.padding_mode == "zeros" else module.padding_mode)
        padding = 0
    else:
        padding = module.padding
    if one_d:
        x = x.unsqueeze(2)
        kernel, dilation, stride = (1, *module.kernel_size), (1, *module.dilation), (1, *module.stride)
    else:
        kernel, dilation, stride = module.kernel_size, module.dilation, module.stride
    cols = F.unfold(x, kernel, dilation=dilation, padding=padding, stride=stride)   # (B, C·k, L)
    return (cols ** 2).sum((0, 2))


def _as_weight_shape(module: nn.Module, norms: torch.Tensor) -> torch.Tensor:
    """Per-feature norms laid out like the module's weight (broadcastable)."""
    weight = module.weight
    if is_conv1d(module):
        return norms[:, None]                                       # (in, 1) against (in, out)
    if isinstance(module, nn.Linear):
        return norms[None, :]                                       # (1, in) against (out, in)
    g = module.groups                                               # conv: (out, in/g, *kernel)
    per_group = norms.reshape(g, *weight.shape[1:])
    return per_group.repeat_interleave(weight.shape[0] // g, 0)


def masks(layers: dict[str, nn.Module], sparsity: float, pattern: tuple[int, int] | None, criterion: str,
          norms: dict[str, torch.Tensor] | None) -> dict[str, torch.Tensor]:
    """{weight name: keep mask} of every layer's weight under `criterion` and `pattern` (module docstring)."""
    out = {}
    for name, module in layers.items():
        scores = module.weight.detach().abs().to(torch.float64)
        if criterion == "wanda" and name in norms:
            scores = scores * norms[name].to(scores.device)
        if pattern is not None:
            out[name] = nm_mask(scores, *pattern, input_dim(module))
        else:
            out[name] = row_mask(scores, sparsity, 1 - input_dim(module))
    return out


def wanda_layers(layers: dict[str, nn.Module]) -> None:
    """ValueError unless every layer is one Wanda scores: nn.Linear, Conv1D, Conv1d or Conv2d."""
    bad = [f"{name} ({type(m).__name__})" for name, m in layers.items()
           if not (isinstance(m, (nn.Linear, *_CONV_NO_TRANSPOSE)) or is_conv1d(m))]
    if bad:
        raise ValueError(f"criterion='wanda' scores nn.Linear, Conv1D, Conv1d and Conv2d weights; "
                         f"these have none of those types: {bad}")
