"""Physical filter removal that computes exactly what the masked model computes.

`remove_filters(model, amount, example_inputs)` removes, from every Conv2d, the output filters that
`torch.nn.utils.prune.ln_structured(conv, "weight", amount, n, dim=0)` would mask, and returns a
module that computes the same function as that masked model (eval mode). The work is done in
`channels/`: graph capture (`capture`), the per-layer pass and its per-op rules (`per_layer`,
`per_layer_rules`, `layout`).
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

from ._util import as_input_tuple, check_module
from .channels.per_layer import FilterSurgery

_CRITERIA = {"l1": 1, "l2": 2}


def filter_keep_mask(weight: torch.Tensor, amount: float, criterion: str = "l1") -> torch.Tensor:
    """Bool vector over output filters: True where `ln_structured` keeps the filter.

    Uses torch's own `LnStructured.compute_mask`, so the count round(amount·c_out) (Python rounding)
    and the tie-breaking of `torch.topk` are those of the masked model by construction.
    """
    method = torch_prune.LnStructured(amount, n=_CRITERIA[criterion], dim=0)
    mask = method.compute_mask(weight.detach(), torch.ones_like(weight))
    return mask.flatten(1).amax(1) > 0


def remove_filters(model: nn.Module, amount: float, example_inputs, criterion: str = "l1",
                   return_recipe: bool = False):
    """Remove from every Conv2d the filters `ln_structured(amount, n=1|2, dim=0)` would mask.

    Args:
        model: a torch.fx-traceable module; left untouched.
        amount: fraction in [0, 1) of each conv's output filters to remove (torch's rounding).
        example_inputs: a tensor or tuple of tensors to trace shapes with (any spatial size works
            afterwards, unless the model flattens spatial maps into a Linear).
        criterion: "l1" or "l2" filter norm.
        return_recipe: also return a JSON-able recipe for `rebuild`.

    Returns:
        A `torch.fx.GraphModule` equal, in eval mode, to the masked model; with `return_recipe`
        the pair (module, recipe).
    """
    if isinstance(amount, bool) or not isinstance(amount, (int, float)) or not 0 <= amount < 1:
        raise ValueError(f"amount must be a float in [0, 1), got {amount!r}")
    if criterion not in _CRITERIA:
        raise ValueError(f"criterion must be 'l1' or 'l2', got {criterion!r}")
    check_module(model)
    inputs = as_input_tuple(example_inputs, "example_inputs")
    surgery = FilterSurgery(model, inputs)
    keep = {name: filter_keep_mask(conv.weight, float(amount), criterion)
            for name, conv in surgery.convs.items()}
    compressed, border = surgery.run(keep, border=None)
    if not return_recipe:
        return compressed
    recipe = {"kind": "remove_filters", "amount": float(amount), "criterion": criterion,
              "filters": {name: torch.nonzero(k).flatten().tolist() for name, k in keep.items()},
              "border": sorted(border),
              "input_shapes": [list(x.shape) for x in inputs],
              "input_dtypes": [str(x.dtype).removeprefix("torch.") for x in inputs]}
    return compressed, recipe


def rebuild_removed_filters(model: nn.Module, recipe: dict) -> nn.Module:
    """Recreate the architecture `remove_filters` produced, from the original architecture."""
    device = next(model.parameters()).device
    inputs = tuple(torch.zeros(shape, dtype=getattr(torch, dt), device=device)
                   for shape, dt in zip(recipe["input_shapes"], recipe["input_dtypes"]))
    surgery = FilterSurgery(model, inputs)
    if set(surgery.convs) != set(recipe["filters"]):
        raise ValueError(f"recipe lists convs {sorted(recipe['filters'])}, the model has "
                         f"{sorted(surgery.convs)}")
    keep = {}
    for name, conv in surgery.convs.items():
        mask = torch.zeros(conv.out_channels, dtype=torch.bool, device=device)
        mask[torch.tensor(recipe["filters"][name], dtype=torch.long, device=device)] = True
        keep[name] = mask
    compressed, _ = surgery.run(keep, border=set(recipe["border"]))
    return compressed
