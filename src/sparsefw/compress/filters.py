"""Physical filter removal that computes exactly what the masked model computes.

`remove_filters(model, amount, example_inputs)` removes, from every Conv2d, the output filters that
`torch.nn.utils.prune.ln_structured(conv, "weight", amount, n, dim=0)` would mask, and returns a
module that computes the same function as that masked model (eval mode). With `coupled=True` it
removes ⌊amount·C⌋ channels from every coupled channel space instead (`graph.groups`), so
residual streams and MLP hidden layers shrink too, exactly the model with those channels masked.

Graph capture (`graph.capture`), the op registry (`graph.ops`) and the dependency analysis
(`graph.groups`, with its per-op rules `graph.group_rules`) live in the lower `sparsefw.graph`; the surgery is done in `graph.surgery` (coupled)
and `channels/`: the per-layer pass (`per_layer`, its per-op rules `per_layer_rules`, `layout`) and its
in-place fallback (`per_layer_inplace`).
"""
from __future__ import annotations

import warnings

import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

from ..graph.arguments import as_input_tuple, check_module
from ..graph.capture import output_tensors
from ..graph.groups import channel_groups
from .channels.per_layer import FilterSurgery, FxPassUnavailable
from .channels.per_layer_inplace import prunable_convs, replace_convs
from ._util import run_compressed
from ..graph.surgery import apply_plan, head_attributes, masked_outputs, outputs_match, plan_removal

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
                   return_recipe: bool = False, coupled: bool = False):
    """Remove filters (per layer, the paper's protocol) or coupled channels, physically.

    Args:
        model: any module torch.export (per layer: preferably torch.fx) can capture on
            `example_inputs`; left untouched.
        amount: fraction in [0, 1). Per layer: of each conv's output filters, round(amount·c_out)
            (torch's rounding). Coupled: ⌊amount·C⌋ of every channel space of C channels.
        example_inputs: a tensor or tuple of tensors to capture the graph with (any spatial size
            works afterwards, unless the model flattens spatial maps into a Linear).
        criterion: "l1" or "l2" norm (per layer: of each filter; coupled: joint norm of all member
            slices of a channel).
        return_recipe: also return a JSON-able recipe for `rebuild`.
        coupled: False = every Conv2d loses the filters `ln_structured(amount, n=1|2, dim=0)` would
            mask, exactly that masked model: a `torch.fx.GraphModule` with the constants of removed
            filters folded into their consumers, or, for a model torch.fx cannot trace (or whose
            forward reads a conv's weight itself), a copy whose convs are `ReducedConv2d`s computing
            only their kept filters (still nn.Conv2d, with the conv's attributes and the masked
            `weight`, so that forward may read `conv.weight.dtype` or `conv.stride`). True = a copy
            of the model (same class and forward) with every channel space of `channel_groups`
            shrunk, exactly the model with those channels' member slices zeroed.

    Returns:
        The compressed module; with `return_recipe` the pair (module, recipe). It has been run on
        example_inputs (a ValueError names the module whose forward fails); a UserWarning says why
        when nothing was removed.
    """
    if isinstance(amount, bool) or not isinstance(amount, (int, float)) or not 0 <= amount < 1:
        raise ValueError(f"amount must be a float in [0, 1), got {amount!r}")
    if criterion not in _CRITERIA:
        raise ValueError(f"criterion must be 'l1' or 'l2', got {criterion!r}")
    if not isinstance(coupled, bool):
        raise ValueError(f"coupled must be True or False, got {coupled!r}")
    check_module(model)
    inputs = as_input_tuple(example_inputs, "example_inputs")
    recipe = {"kind": "remove_filters", "amount": float(amount), "criterion": criterion,
              "input_shapes": [list(x.shape) for x in inputs],
              "input_dtypes": [str(x.dtype).removeprefix("torch.") for x in inputs]}
    if coupled:
        groups = channel_groups(model, inputs)
        compressed, plan, attributes = _coupled(model, groups, float(amount), criterion, inputs)
        recipe.update(coupled=True, slices=plan, attributes=attributes)
        if not plan:
            _warn_unchanged(amount, coupled, [g.size for g in groups])
    else:
        surgery = _per_layer_surgery(model, inputs)
        convs = surgery.convs if surgery is not None else prunable_convs(model, inputs)
        keep = {name: filter_keep_mask(conv.weight, float(amount), criterion)
                for name, conv in convs.items()}
        _check_not_emptied(keep)
        if surgery is not None:
            compressed, border = surgery.run(keep, border=None)
        else:
            compressed, border = replace_convs(model, keep), set()
        recipe.update(filters={name: torch.nonzero(k).flatten().tolist() for name, k in keep.items()},
                      border=sorted(border), in_place=surgery is None)
        reduced = [name for name, k in keep.items() if not bool(k.all())]
        run_compressed(compressed, inputs, "remove_filters", reduced)
        if not reduced:
            _warn_unchanged(amount, coupled, [conv.out_channels for conv in convs.values()])
    return (compressed, recipe) if return_recipe else compressed


def _coupled(model: nn.Module, groups: list, amount: float, criterion: str, inputs: tuple):
    """(compressed, plan, attribute patches), checked exact against the masked model. Spaces of
    heads and split parts whose removal the forward does not follow were fixed by the analysis
    (`channel_groups` tries one unit); head counts are patched (`graph.surgery.head_attributes`)."""
    plan = plan_removal(model, groups, amount, criterion)
    attributes = head_attributes(model, groups, amount)
    compressed = apply_plan(model, plan, attributes)
    _check_exact(model, compressed, plan, inputs)
    return compressed, plan, attributes


def _per_layer_surgery(model: nn.Module, inputs: tuple) -> FilterSurgery | None:
    """The fx pass, or None where it cannot rebuild the model (untraceable, or a conv's weight
    read directly) but torch.export can capture it (then the in-place fallback runs); ValueError
    naming both reasons if neither works."""
    try:
        return FilterSurgery(model, inputs)
    except FxPassUnavailable as fx_error:
        try:
            prunable_convs(model, inputs)
        except ValueError as export_error:
            raise ValueError(f"{fx_error}; and {export_error}") from export_error
        return None


def _check_exact(model: nn.Module, compressed: nn.Module, plan: dict, inputs: tuple) -> None:
    """Run the compressed model and the masked one (the removed slices of every planned parameter
    zeroed) on example_inputs; they must agree. The captured graph holds sizes as constants, so a
    forward that writes a channel count itself (view(-1, 128), split sizes) is caught here."""
    expected = masked_outputs(model, plan, inputs)
    changed = sorted({name.rpartition(".")[0] for name in plan})
    got = list(output_tensors(run_compressed(
        compressed, inputs, "remove_filters(coupled=True)", changed,
        hint="probably because its forward hard-codes a channel count")))
    if not all(map(outputs_match, got, expected)):
        raise ValueError("the coupled-compressed model differs from the masked model on example_inputs, "
                         "probably because its forward hard-codes a channel count (a view or reshape)")


def _warn_unchanged(amount: float, coupled: bool, sizes: list[int]) -> None:
    """The UserWarning of a call that removed nothing; `sizes`: the channel counts it could cut
    from (C of every coupled channel space, or c_out of every prunable conv)."""
    if not sizes:
        why = "no coupled channel space" if coupled else "no Conv2d that remove_filters can prune"
        why = f"the model has {why}"
    else:
        rule, size = ("⌊amount·C⌋", "C") if coupled else ("round(amount·c_out)", "c_out")
        why = (f"{rule} = 0 for every {'channel space' if coupled else 'conv'} (the largest has "
               f"{size} = {max(sizes)})")
    flag = ", coupled=True" if coupled else ""
    warnings.warn(f"remove_filters(amount={amount}{flag}) changed nothing: {why}", stacklevel=3)


def _check_not_emptied(keep: dict[str, torch.Tensor]) -> None:
    for name, mask in keep.items():
        if not bool(mask.any()):
            raise ValueError(f"removing filters empties conv {name!r} (all "
                             f"{mask.numel()} filters masked); use a smaller amount")


def rebuild_removed_filters(model: nn.Module, recipe: dict) -> nn.Module:
    """Recreate the architecture `remove_filters` produced, from the original architecture."""
    if recipe.get("coupled"):
        return apply_plan(model, recipe["slices"], recipe.get("attributes"))
    device = next(model.parameters()).device
    inputs = tuple(torch.zeros(shape, dtype=getattr(torch, dt), device=device)
                   for shape, dt in zip(recipe["input_shapes"], recipe["input_dtypes"]))
    surgery = None if recipe.get("in_place") else FilterSurgery(model, inputs)
    convs = surgery.convs if surgery is not None else prunable_convs(model, inputs)
    if set(convs) != set(recipe["filters"]):
        raise ValueError(f"recipe lists convs {sorted(recipe['filters'])}, the model has "
                         f"{sorted(convs)}")
    keep = {}
    for name, conv in convs.items():
        mask = torch.zeros(conv.out_channels, dtype=torch.bool, device=device)
        mask[torch.tensor(recipe["filters"][name], dtype=torch.long, device=device)] = True
        keep[name] = mask
    if surgery is None:
        return replace_convs(model, keep)
    compressed, _ = surgery.run(keep, border=set(recipe["border"]))
    return compressed
