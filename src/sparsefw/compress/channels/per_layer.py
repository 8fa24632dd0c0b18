"""The per-layer pass (`coupled=False`): the paper's protocol, exactly the masked model.

Every Conv2d keeps the filters `ln_structured` keeps. The fx graph is replayed node by node into a
new graph; every tensor carries a channel `Layout` along dim 1 (the original channels physically
present, a constant for every other one — a masked filter emits its bias everywhere). The rules of
`per_layer_rules` fold constants into their consumers:

* Conv2d: Σ_c a_c·W[o, c] is added to the bias; if the conv zero-pads, the contribution shrinks near
  the border, so a `BorderCorrection` adds conv(ones, Σ_c a_c·W[o, c]) instead (any input size).
* Linear: b ← b + W·a (after flatten the constant of channel c repeats over its H·W features).
* BN and element-wise activations map constants to constants, max/adaptive pools and spatial means
  keep them, concatenation concatenates layouts, a residual add runs on the union of the channels.
* Anything else (an unknown op, the model output, a `size()` query, a channel-broadcast op) sees
  the full tensor: an `Assemble` puts the present channels back in place and fills in the
  constants.

Grouped and depthwise convs: groups whose filters are all masked are dropped with their input
channels; the remaining groups keep max_j k_j filters each (masked filters added to reach that count
get zero weights and so still emit their bias, as in the masked model). Exact in eval mode: BatchNorm
is applied to constants with its running statistics and dropout is the identity.
"""
from __future__ import annotations

import torch
from torch import fx, nn

from .._modules import Assemble
from ...graph.capture import CaptureError, tensor_aliases, trace_fx
from .layout import Layout, meta_shape
from .per_layer_inplace import refuse_tied
from .per_layer_rules import find_rule


class FxPassUnavailable(ValueError):
    """The fx pass cannot rebuild this model: torch.fx cannot trace it, or a conv's parameter is
    read outside the conv's call (`x.to(conv.weight.dtype)`); the in-place fallback may."""


class FilterSurgery:
    """One pass over the traced graph, building a new graph with channel-reduced tensors."""

    def __init__(self, model: nn.Module, inputs: tuple):
        self.training = model.training
        self.device = inputs[0].device
        try:
            self.root, self.gm = trace_fx(model, inputs)
        except CaptureError as exc:
            raise FxPassUnavailable(str(exc)) from exc
        self.convs: dict[str, nn.Conv2d] = {}
        calls: dict[str, int] = {}
        for node in self.gm.graph.nodes:
            if node.op == "call_module" and isinstance(self.module(node), nn.Conv2d):
                calls[node.target] = calls.get(node.target, 0) + 1
                self.convs[node.target] = self.module(node)
        for name, count in calls.items():
            if count > 1:
                raise ValueError(f"remove_filters cannot prune conv {name!r}: it is called {count} "
                                 "times in the forward pass (shared weights)")
        self.aliases = tensor_aliases(self.root)
        refuse_tied(self.convs, self.aliases)
        for node in self.gm.graph.nodes:
            if node.op == "get_attr" and any(node.target.startswith(name + ".") for name in calls):
                raise FxPassUnavailable(f"the fx pass of remove_filters cannot prune conv "
                                        f"{node.target.rsplit('.', 1)[0]!r}: its parameter "
                                        f"{node.target!r} is also read directly")

    def module(self, node: fx.Node) -> nn.Module:
        return self.gm.get_submodule(node.target)

    def is_tied(self, node: fx.Node) -> bool:
        """Whether the module `node` calls holds a tensor tied to another name (rebuilding the
        module would untie it)."""
        module = self.module(node)
        names = [name for name, _ in (*module.named_parameters(remove_duplicate=False),
                                      *module.named_buffers(remove_duplicate=False))]
        return any(f"{node.target}.{name}" in self.aliases for name in names)

    # ----------------------------------------------------------------------------------------
    def run(self, keep: dict[str, torch.Tensor], border: set[str] | None):
        """Build the compressed GraphModule; `border` None = decide border corrections by value."""
        self.keep, self.border_given, self.border_used = keep, border, set()
        self.graph = fx.Graph()
        self.env: dict[fx.Node, tuple] = {}
        self.assembled: dict[tuple, fx.Node] = {}
        self.n_assemble = 0
        for node in self.gm.graph.nodes:
            self.env[node] = self.visit(node)
        self.graph.lint()
        out = fx.GraphModule(self.root, self.graph, class_name=type(self.root).__name__)
        out.train(self.training)
        return out, self.border_used

    def visit(self, node: fx.Node):
        if node.op in ("placeholder", "get_attr"):
            return self.graph.node_copy(node), None
        if node.op == "output":
            return self.graph.output(self.full_args(node.args)[0]), None
        rule = find_rule(self, node)
        if rule is not None:
            return rule(self, node)
        return self.fallback(node)

    # ---- helpers -----------------------------------------------------------------------------
    def full_args(self, args):
        """Map args to physical nodes, putting removed channels back where a layout is reduced."""
        def full(n: fx.Node):
            new, layout = self.env[n]
            return new if layout is None else self.assemble(n, layout.kept.new_tensor(
                range(layout.size)))
        return fx.node.map_arg(args, full)

    def assemble(self, node: fx.Node, target: torch.Tensor) -> fx.Node:
        """Node holding the channels `target` (ascending, CPU) of `node`, constants filled in."""
        new, layout = self.env[node]
        size = layout.size if layout is not None else meta_shape(node)[1]
        kept = layout.kept if layout is not None else torch.arange(size)
        if torch.equal(kept, target):
            return new
        key = (node, tuple(target.tolist()))
        if key not in self.assembled:
            position = torch.full((size,), -1, dtype=torch.long)
            position[kept] = torch.arange(kept.numel())
            source = position[target]
            is_fill = source < 0
            index = source.clamp(min=0).to(self.device)
            if bool(is_fill.any()):
                fill = layout.const[target.to(layout.const.device)]
                is_fill = is_fill.to(fill.device)
                module = Assemble(index, is_fill, fill * is_fill)
            else:
                module = Assemble(index)
            name = f"assemble_{self.n_assemble}"
            self.n_assemble += 1
            self.root.add_module(name, module)
            self.assembled[key] = self.graph.call_module(name, (new,))
        return self.assembled[key]

    def fallback(self, node: fx.Node):
        args, kwargs = self.full_args(node.args), self.full_args(node.kwargs)
        return self.graph.create_node(node.op, node.target, args, kwargs, node.name), None

    def emit(self, node: fx.Node, first: fx.Node):
        """Copy `node` with its first argument replaced by `first` (other args must be plain)."""
        rest = fx.node.map_arg(node.args[1:], lambda n: self.env[n][0])
        kwargs = fx.node.map_arg(node.kwargs, lambda n: self.env[n][0])
        return self.graph.create_node(node.op, node.target, (first,) + tuple(rest), kwargs,
                                      node.name)

    def constant_of(self, node: fx.Node, layout: Layout) -> torch.Tensor:
        """The constants as a tensor shaped like one sample position of `node`'s output."""
        ndim = len(meta_shape(node))
        return layout.const.view((1, -1) + (1,) * (ndim - 2)).clone()

    def apply_to_constants(self, node: fx.Node, *args, **kwargs) -> torch.Tensor:
        """Evaluate `node`'s op (eval mode, no grad) on constant tensors."""
        with torch.no_grad():
            if node.op == "call_module":
                module = self.module(node)
                was_training = module.training
                module.eval()
                try:
                    out = module(*args, **kwargs)
                finally:
                    module.train(was_training)
            elif node.op == "call_function":
                out = node.target(*args, **kwargs)
            else:
                out = getattr(args[0], node.target)(*args[1:], **kwargs)
        return out.reshape(-1)
