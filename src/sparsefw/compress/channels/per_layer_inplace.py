"""The per-layer pass for models torch.fx cannot trace: each Conv2d replaced in place.

A conv of groups 1 becomes a `ReducedConv2d` (conv of its kept filters, then an Assemble that puts
the removed filters back as the constant each emits in the masked model: its bias, or 0), so the
module computes exactly the masked conv, is still an nn.Conv2d with the conv's attributes (its
`weight` the masked weight) and the rest of the user's forward runs unchanged. Nothing
is folded into the consumers (that needs the fx pass), so this saves only the removed filters'
work. A grouped conv keeps its shape with the masked filters' weights zeroed (exact, not smaller).
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from .._modules import Assemble, ReducedConv2d
from .._util import set_submodule
from ...graph.capture import export_graph, tensor_aliases


def prunable_convs(model: nn.Module, inputs: tuple) -> dict[str, nn.Conv2d]:
    """The Conv2d modules of `model`, checked on a `torch.export` capture: each weight read once."""
    captured = export_graph(model, inputs)
    uses = {name: len(node.users) for node, name in captured.state_names.items()}
    convs = {name: m for name, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    for name in convs:
        if uses.get(f"{name}.weight", 0) > 1:
            raise ValueError(f"remove_filters cannot prune conv {name!r}: it is called "
                             f"{uses[name + '.weight']} times in the forward pass (shared weights)")
    convs = {name: conv for name, conv in convs.items() if uses.get(f"{name}.weight", 0) == 1}
    refuse_tied(convs, captured.aliases)
    return convs


def refuse_tied(convs: dict[str, nn.Conv2d], aliases: dict[str, tuple[str, ...]]) -> None:
    """ValueError if a conv's weight or bias is tied to a tensor of another name: rebuilding the
    conv would untie them."""
    for name in convs:
        for leaf in ("weight", "bias"):
            if f"{name}.{leaf}" in aliases:
                raise ValueError(f"remove_filters cannot prune conv {name!r}: its {leaf} is tied to "
                                 f"{', '.join(aliases[f'{name}.{leaf}'])} (shared weights)")


def replace_convs(model: nn.Module, keep: dict[str, torch.Tensor]) -> nn.Module:
    """A copy of `model` with every conv of `keep` computing only its kept filters."""
    out = copy.deepcopy(model)
    for name, mask in keep.items():
        conv = out.get_submodule(name)
        if bool(mask.all()):
            continue
        device, dtype = conv.weight.device, conv.weight.dtype
        mask = mask.to(device)
        if conv.groups > 1:
            with torch.no_grad():
                conv.weight.mul_(mask.to(dtype).view(-1, 1, 1, 1))
            continue
        kept = torch.nonzero(mask).flatten()
        small = nn.Conv2d(conv.in_channels, kept.numel(), conv.kernel_size, conv.stride,
                          conv.padding, conv.dilation, bias=conv.bias is not None,
                          padding_mode=conv.padding_mode, device=device, dtype=dtype)
        with torch.no_grad():
            small.weight.copy_(conv.weight[kept])
            if conv.bias is not None:
                small.bias.copy_(conv.bias[kept])
        is_fill = ~mask
        index = torch.cumsum(mask.long(), 0) - 1
        fill = (conv.bias.detach() if conv.bias is not None else torch.zeros_like(mask, dtype=dtype))
        small.train(conv.training)
        set_submodule(out, name, ReducedConv2d(small, Assemble(index.clamp(min=0), is_fill,
                                                               fill * is_fill)))
    return out
