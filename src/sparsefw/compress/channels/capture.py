"""Capture a model's graph from example inputs.

`trace_fx` (the per-layer pass): torch.fx symbolic tracing of a copy of the model, shapes from
`ShapeProp`; the pass rebuilds that graph, so it needs a symbolically traceable forward.
`export_graph` (the dependency analysis): `torch.export` (non-strict) of the model called on the
example inputs, outputs flattened (dataclasses, dicts, tuples, lists), so a forward may branch on
shapes, take keyword arguments with defaults, use in-place ops and functional calls and return any
such structure. The graph is read only; the compressed model keeps the user's own forward.
"""
from __future__ import annotations

import copy

import torch
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp


def trace_fx(model: nn.Module, inputs: tuple) -> tuple[nn.Module, fx.GraphModule]:
    """(copy of `model`, its fx graph in eval mode with tensor shapes in node.meta)."""
    root = copy.deepcopy(model)
    try:
        gm = fx.symbolic_trace(root)
    except Exception as exc:  # torch.fx raises many types; re-raise one with the reason
        raise ValueError("remove_filters needs a model that torch.fx can trace symbolically; "
                         f"tracing {type(model).__name__} failed: {exc}") from exc
    gm.eval()
    with torch.no_grad():
        ShapeProp(gm).propagate(*inputs)
    return root, gm
