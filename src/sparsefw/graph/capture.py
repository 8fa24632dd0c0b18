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
import dataclasses
from dataclasses import dataclass

import torch
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from .attention import with_headed_attention


class CaptureError(ValueError):
    """The model's graph cannot be captured on the example inputs (the reason from torch.fx or
    torch.export in the message, their exception chained)."""


def trace_fx(model: nn.Module, inputs: tuple) -> tuple[nn.Module, fx.GraphModule]:
    """(copy of `model`, its fx graph in eval mode with tensor shapes in node.meta); CaptureError
    if torch.fx cannot trace it."""
    root = copy.deepcopy(model)
    try:
        gm = fx.symbolic_trace(root)
    except Exception as exc:  # torch.fx raises many types; re-raise one with the reason
        raise CaptureError("remove_filters needs a model that torch.fx can trace symbolically; "
                           f"tracing {type(model).__name__} failed: {exc}") from exc
    gm.eval()
    with torch.no_grad():
        ShapeProp(gm).propagate(*inputs)
    return root, gm


@dataclass
class ExportedGraph:
    """An aten-level graph of the model on the example inputs.

    `graph`: the fx graph of the ExportedProgram (tensor values as FakeTensors in node.meta["val"]);
    `state_names`: placeholder node → qualified name in the model of the parameter or buffer it
    stands for; `parameters`: the qualified names that are parameters (the others are buffers);
    `aliases`: `tensor_aliases` of the model (torch.export may lift a tied tensor once per name).
    """

    graph: fx.Graph
    state_names: dict[fx.Node, str]
    parameters: set[str]
    aliases: dict[str, tuple[str, ...]]


def tensor_aliases(model: nn.Module) -> dict[str, tuple[str, ...]]:
    """{name: the other names of the same tensor} for every parameter or buffer of `model` that
    has several qualified names (tied weights, `head.weight = embed.weight`, or a module
    registered twice); names with one tensor of their own are absent."""
    names: dict[int, list[str]] = {}
    for name, tensor in [*model.named_parameters(remove_duplicate=False),
                         *model.named_buffers(remove_duplicate=False)]:
        names.setdefault(id(tensor), []).append(name)
    return {name: tuple(other for other in group if other != name)
            for group in names.values() if len(group) > 1 for name in group}


class _FlatOutputs(nn.Module):
    """Calls the model and flattens its output (dataclasses, dicts, tuples, lists) to a tuple of
    tensors, so that any output structure can be exported."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, *inputs):
        return tuple(output_tensors(self.model(*inputs)))


def output_tensors(value):
    """The tensors of a model output, depth first through dataclasses, dicts, tuples and lists."""
    if isinstance(value, torch.Tensor):
        yield value
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        for field in dataclasses.fields(value):
            yield from output_tensors(getattr(value, field.name))
    elif isinstance(value, dict):
        for item in value.values():
            yield from output_tensors(item)
    elif isinstance(value, (tuple, list)):
        for item in value:
            yield from output_tensors(item)


def export_graph(model: nn.Module, inputs: tuple) -> ExportedGraph:
    """Capture `model` (in eval mode, on a copy) with `torch.export.export(..., strict=False)`,
    every nn.MultiheadAttention computed head by head (`attention.HeadedMultiheadAttention`, the
    same function, so that its heads are visible).

    Raises CaptureError naming the model and torch.export's reason when it cannot be captured.
    """
    copied = with_headed_attention(copy.deepcopy(model).eval())
    wrapper = _FlatOutputs(copied)
    try:
        with torch.no_grad():
            program = torch.export.export(wrapper, inputs, strict=False)
    except Exception as exc:  # torch.export raises many types; re-raise one with the reason
        reason = str(exc).strip().split("\n")[0]
        raise CaptureError(f"the channel analysis (sparsefw.graph) could not capture {type(model).__name__} "
                         f"with torch.export on example_inputs: {type(exc).__name__}: {reason}") from exc
    program.graph.eliminate_dead_code()  # values the model computes and drops (attention weights) read nothing
    signature = program.graph_signature
    by_input = {**signature.inputs_to_parameters, **signature.inputs_to_buffers}
    state_names = {node: by_input[node.name].removeprefix("model.")
                   for node in program.graph.nodes
                   if node.op == "placeholder" and node.name in by_input}
    parameters = {name.removeprefix("model.") for name in signature.inputs_to_parameters.values()}
    return ExportedGraph(program.graph, state_names, parameters, tensor_aliases(copied))
