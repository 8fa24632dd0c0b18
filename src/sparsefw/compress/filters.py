"""Physical filter removal that computes exactly what the masked model computes.

`remove_filters(model, amount, example_inputs)` removes, from every Conv2d, the output filters that
`torch.nn.utils.prune.ln_structured(conv, "weight", amount, n, dim=0)` would mask, and returns a
`torch.fx.GraphModule` that computes the same function as that masked model (eval mode).

How it stays exact. The graph is traced with torch.fx and every tensor gets a channel *layout*
along dim 1: the original channels `kept` that are physically present, and for every other
channel a constant. A masked filter f emits its bias b_f everywhere (its weights are zero), BN and
element-wise activations map constants to constants, max/adaptive pools and spatial means keep
them, concatenation concatenates layouts, a residual add unites the two channel sets. A consumer
then folds the constants away:

* Conv2d: Σ_c a_c·W[o, c] is added to the bias; if the conv zero-pads, the contribution shrinks near
  the border, so a `BorderCorrection` adds conv(ones, Σ_c a_c·W[o, c]) instead (any input size).
* Linear: b ← b + W·a (after flatten the constant of channel c repeats over its H·W features).
* Anything else (an unknown op, the model output, a `size()` query, a channel-broadcast op) sees
  the full tensor: an `Assemble` puts the present channels back in place and fills in the
  constants. Residual streams whose channels cannot all leave are handled this way: the convs
  compute only their kept filters, the add runs on the union of the channel sets.

Grouped and depthwise convs: groups whose filters are all masked are dropped with their input
channels; the remaining groups keep max_j k_j filters each (masked filters added to reach that count
get zero weights and so still emit their bias, as in the masked model).

Exact in eval mode: BatchNorm is applied to constants with its running statistics and dropout is
the identity. A conv whose every filter would be masked raises ValueError.
"""
from __future__ import annotations

import copy
import math
import operator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp
from torch.nn.utils import prune as torch_prune

from ._modules import Assemble, BorderCorrection
from ._util import as_input_tuple, check_module, set_submodule

_CRITERIA = {"l1": 1, "l2": 2}

_ELEMENTWISE_MODULES = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU,
                        nn.Mish, nn.Sigmoid, nn.Tanh, nn.Hardtanh, nn.Hardswish, nn.Hardsigmoid,
                        nn.Softplus, nn.Identity)
_DROPOUT_MODULES = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout,
                    nn.FeatureAlphaDropout)
_ELEMENTWISE_FUNCTIONS = {F.relu, torch.relu, torch.relu_, F.relu_, F.relu6, F.leaky_relu, F.elu,
                          F.selu, F.celu, F.gelu, F.silu, F.mish, F.hardswish, F.hardsigmoid,
                          F.hardtanh, F.softplus, torch.sigmoid, F.sigmoid, torch.tanh, F.tanh,
                          torch.clamp, torch.clip, torch.abs, torch.neg, torch.exp}
_DROPOUT_FUNCTIONS = {F.dropout, F.dropout1d, F.dropout2d, F.dropout3d, F.alpha_dropout,
                      F.feature_alpha_dropout}
_ELEMENTWISE_METHODS = {"relu", "relu_", "sigmoid", "sigmoid_", "tanh", "tanh_", "clamp", "clamp_",
                        "clip", "clip_", "abs", "neg", "exp"}
_BINARY_FUNCTIONS = {operator.add, operator.sub, operator.mul, operator.truediv, operator.iadd,
                     operator.isub, operator.imul, operator.itruediv, torch.add, torch.sub,
                     torch.mul, torch.div}
_BINARY_METHODS = {"add", "add_", "sub", "sub_", "mul", "mul_", "div", "div_"}
_CHANNEL_POOL_MODULES = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AdaptiveAvgPool1d,
                         nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d, nn.AdaptiveMaxPool1d,
                         nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d)
_CHANNEL_POOL_FUNCTIONS = {F.max_pool1d, F.max_pool2d, F.max_pool3d, F.adaptive_avg_pool1d,
                           F.adaptive_avg_pool2d, F.adaptive_avg_pool3d, F.adaptive_max_pool1d,
                           F.adaptive_max_pool2d, F.adaptive_max_pool3d}


@dataclass(frozen=True)
class _Layout:
    """Channels (dim 1) of a tensor: `kept` (ascending original indices) are physically present in
    that order; every other channel c equals `const[c]` everywhere (entries at `kept` are 0)."""

    kept: torch.Tensor
    const: torch.Tensor

    @property
    def size(self) -> int:
        return self.const.numel()


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
    surgery = _FilterSurgery(model, inputs)
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
    surgery = _FilterSurgery(model, inputs)
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


class _FilterSurgery:
    """One pass over the traced graph, building a new graph with channel-reduced tensors."""

    def __init__(self, model: nn.Module, inputs: tuple):
        self.training = model.training
        self.device = inputs[0].device
        self.root = copy.deepcopy(model)
        try:
            self.gm = fx.symbolic_trace(self.root)
        except Exception as exc:  # torch.fx raises many types; re-raise one with the reason
            raise ValueError("remove_filters needs a model that torch.fx can trace symbolically; "
                             f"tracing {type(model).__name__} failed: {exc}") from exc
        self.gm.eval()
        with torch.no_grad():
            ShapeProp(self.gm).propagate(*inputs)
        self.convs: dict[str, nn.Conv2d] = {}
        calls: dict[str, int] = {}
        for node in self.gm.graph.nodes:
            if node.op == "call_module" and isinstance(self._module(node), nn.Conv2d):
                calls[node.target] = calls.get(node.target, 0) + 1
                self.convs[node.target] = self._module(node)
        for name, count in calls.items():
            if count > 1:
                raise ValueError(f"remove_filters cannot prune conv {name!r}: it is called {count} "
                                 "times in the forward pass (shared weights)")
        for node in self.gm.graph.nodes:
            if node.op == "get_attr" and any(node.target.startswith(name + ".") for name in calls):
                raise ValueError(f"remove_filters cannot prune conv {node.target.rsplit('.', 1)[0]!r}"
                                 f": its parameter {node.target!r} is also read directly")

    def _module(self, node: fx.Node) -> nn.Module:
        return self.gm.get_submodule(node.target)

    # ----------------------------------------------------------------------------------------
    def run(self, keep: dict[str, torch.Tensor], border: set[str] | None):
        """Build the compressed GraphModule; `border` None = decide border corrections by value."""
        for name, mask in keep.items():
            if not bool(mask.any()):
                raise ValueError(f"removing filters empties conv {name!r} (all "
                                 f"{mask.numel()} filters masked); use a smaller amount")
        self.keep, self.border_given, self.border_used = keep, border, set()
        self.graph = fx.Graph()
        self.env: dict[fx.Node, tuple] = {}
        self.assembled: dict[tuple, fx.Node] = {}
        self.n_assemble = 0
        for node in self.gm.graph.nodes:
            self.env[node] = self._visit(node)
        self.graph.lint()
        out = fx.GraphModule(self.root, self.graph, class_name=type(self.root).__name__)
        out.train(self.training)
        return out, self.border_used

    def _visit(self, node: fx.Node):
        if node.op in ("placeholder", "get_attr"):
            return self.graph.node_copy(node), None
        if node.op == "output":
            return self.graph.output(self._full_args(node.args)[0]), None
        rule = self._rule(node)
        if rule is not None:
            return rule(node)
        return self._fallback(node)

    def _rule(self, node: fx.Node):
        op, target = node.op, node.target
        if op == "call_module":
            module = self._module(node)
            if isinstance(module, nn.Conv2d):
                return self._conv
            if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.track_running_stats:
                return self._batchnorm
            if isinstance(module, nn.Linear):
                return self._linear
            if isinstance(module, _ELEMENTWISE_MODULES) or (
                    isinstance(module, nn.PReLU) and module.num_parameters == 1):
                return self._elementwise
            if isinstance(module, _DROPOUT_MODULES) or isinstance(module, _CHANNEL_POOL_MODULES) \
                    or (isinstance(module, (nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d))
                        and _avg_pool_keeps_constants(module)):
                return self._passthrough
            if isinstance(module, nn.Flatten) and module.start_dim == 1 and module.end_dim == -1:
                return self._flatten
            return None
        if op == "call_function":
            if target in _ELEMENTWISE_FUNCTIONS:
                return self._elementwise
            if target in _DROPOUT_FUNCTIONS or target in _CHANNEL_POOL_FUNCTIONS:
                return self._passthrough
            if target in _BINARY_FUNCTIONS:
                return self._binary
            if target is torch.cat or target is torch.concat:
                return self._cat
            if target is torch.flatten and _flatten_from_1(node.args[1:], node.kwargs):
                return self._flatten
            if target is torch.mean and _spatial_reduction(node):
                return self._passthrough
            return None
        if op == "call_method":
            if target in _ELEMENTWISE_METHODS:
                return self._elementwise
            if target in _BINARY_METHODS:
                return self._binary
            if target == "flatten" and _flatten_from_1(node.args[1:], node.kwargs):
                return self._flatten
            if target in ("view", "reshape") and _is_batch_flatten(node):
                return self._flatten
            if target in ("mean", "amax") and _spatial_reduction(node):
                return self._passthrough
            if target == "size" and (node.args[1:] == (0,) or node.kwargs == {"dim": 0}):
                return self._metadata
            if target == "dim":
                return self._metadata
        return None

    # ---- helpers -----------------------------------------------------------------------------
    def _full_args(self, args):
        """Map args to physical nodes, putting removed channels back where a layout is reduced."""
        def full(n: fx.Node):
            new, layout = self.env[n]
            return new if layout is None else self._assemble(n, layout.kept.new_tensor(
                range(layout.size)))
        return fx.node.map_arg(args, full)

    def _assemble(self, node: fx.Node, target: torch.Tensor) -> fx.Node:
        """Node holding the channels `target` (ascending, CPU) of `node`, constants filled in."""
        new, layout = self.env[node]
        size = layout.size if layout is not None else _meta_shape(node)[1]
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

    def _fallback(self, node: fx.Node):
        args, kwargs = self._full_args(node.args), self._full_args(node.kwargs)
        return self.graph.create_node(node.op, node.target, args, kwargs, node.name), None

    def _emit(self, node: fx.Node, first: fx.Node):
        """Copy `node` with its first argument replaced by `first` (other args must be plain)."""
        rest = fx.node.map_arg(node.args[1:], lambda n: self.env[n][0])
        kwargs = fx.node.map_arg(node.kwargs, lambda n: self.env[n][0])
        return self.graph.create_node(node.op, node.target, (first,) + tuple(rest), kwargs,
                                      node.name)

    def _constant_of(self, node: fx.Node, layout: _Layout) -> torch.Tensor:
        """The constants as a tensor shaped like one sample position of `node`'s output."""
        ndim = len(_meta_shape(node))
        return layout.const.view((1, -1) + (1,) * (ndim - 2)).clone()

    def _apply_to_constants(self, node: fx.Node, *args, **kwargs) -> torch.Tensor:
        """Evaluate `node`'s op (eval mode, no grad) on constant tensors."""
        with torch.no_grad():
            if node.op == "call_module":
                module = self._module(node)
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

    # ---- rules ---------------------------------------------------------------------------------
    def _metadata(self, node: fx.Node):
        return self._emit(node, self.env[node.args[0]][0]), None

    def _passthrough(self, node: fx.Node):
        """Ops that map each channel on its own and keep a constant channel constant."""
        if not _no_nodes((node.args[1:], node.kwargs)):
            return self._fallback(node)
        first, layout = self.env[node.args[0]]
        return self._emit(node, first), layout

    def _elementwise(self, node: fx.Node):
        if not _no_nodes((node.args[1:], node.kwargs)):
            return self._fallback(node)
        first, layout = self.env[node.args[0]]
        new = self._emit(node, first)
        if layout is None:
            return new, None
        kwargs = {k: v for k, v in node.kwargs.items() if k != "inplace"}
        const = self._apply_to_constants(node, self._constant_of(node.args[0], layout),
                                         *node.args[1:], **kwargs)
        return new, _Layout(layout.kept, const.masked_fill(_present(layout), 0))

    def _binary(self, node: fx.Node):
        """a ∘ b element-wise: runs on the union of present channels; constants combine."""
        tensors = list(dict.fromkeys(x for x in (*node.args, *node.kwargs.values())
                                     if isinstance(x, fx.Node)))
        out_shape = _meta_shape(node)
        if out_shape is None or len(out_shape) < 2 or any(
                _meta_shape(x) is None or len(_meta_shape(x)) != len(out_shape)
                or _meta_shape(x)[1] != out_shape[1] for x in tensors):
            return self._fallback(node)
        layouts = [self.env[x][1] for x in tensors]
        if any(layout is None for layout in layouts):
            return self._fallback(node)
        channels = out_shape[1]
        union = torch.zeros(channels, dtype=torch.bool)
        for layout in layouts:
            union[layout.kept] = True
        target = torch.nonzero(union).flatten()
        physical = {x: self._assemble(x, target) for x in tensors}
        args = fx.node.map_arg(node.args, physical.__getitem__)
        kwargs = fx.node.map_arg(node.kwargs, physical.__getitem__)
        new = self.graph.create_node(node.op, node.target, args, kwargs, node.name)
        if target.numel() == channels:
            return new, None
        constants = {x: self._constant_of(x, layout) for x, layout in zip(tensors, layouts)}
        const = self._apply_to_constants(
            node, *fx.node.map_arg(node.args, lambda x: constants[x].clone()),
            **fx.node.map_arg(node.kwargs, lambda x: constants[x].clone()))
        present = union.to(const.device)
        return new, _Layout(target, const.masked_fill(present, 0))

    def _cat(self, node: fx.Node):
        tensors = node.args[0] if node.args else node.kwargs["tensors"]
        dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
        if not isinstance(tensors, (list, tuple)) or not all(isinstance(t, fx.Node) for t in tensors):
            return self._fallback(node)
        ndim = len(_meta_shape(node))
        if dim % ndim != 1:
            return self._fallback(node)
        entries = [self.env[t] for t in tensors]
        new = self.graph.create_node(node.op, node.target, ([e[0] for e in entries],),
                                     {"dim": dim}, node.name)
        if all(layout is None for _, layout in entries):
            return new, None
        reference = next(layout for _, layout in entries if layout is not None)
        kept, const, offset = [], [], 0
        for t, (_, layout) in zip(tensors, entries):
            size = _meta_shape(t)[1]
            if layout is None:
                kept.append(torch.arange(size, device=reference.kept.device) + offset)
                const.append(reference.const.new_zeros(size))
            else:
                kept.append(layout.kept + offset)
                const.append(layout.const)
            offset += size
        return new, _Layout(torch.cat(kept), torch.cat(const))

    def _flatten(self, node: fx.Node):
        first, layout = self.env[node.args[0]]
        in_shape = _meta_shape(node.args[0])
        inner = math.prod(in_shape[2:])
        consumers_are_linear = all(
            u.op == "call_module" and isinstance(self._module(u), nn.Linear) for u in node.users)
        if layout is None:
            return self._emit(node, first), None
        if inner != 1 and not consumers_are_linear:
            # a flattened channel layout is tied to the traced spatial size: keep it only where a
            # Linear (which fixes that size anyway) folds it right away
            return self._fallback(node)
        if not _no_nodes(node.kwargs) or not all(
                not isinstance(a, fx.Node) or self.env[a][1] is None for a in node.args[1:]):
            return self._fallback(node)
        offsets = torch.arange(inner, device=layout.kept.device)
        kept = (layout.kept[:, None] * inner + offsets).flatten()
        return self._emit(node, first), _Layout(kept, layout.const.repeat_interleave(inner))

    def _batchnorm(self, node: fx.Node):
        first, layout = self.env[node.args[0]]
        bn = self._module(node)
        if layout is None:
            return self._emit(node, first), None
        kept = layout.kept
        new_bn = type(bn)(kept.numel(), eps=bn.eps, momentum=bn.momentum, affine=bn.affine,
                          track_running_stats=True, device=bn.running_mean.device,
                          dtype=bn.running_mean.dtype)
        state = {k: (v[kept] if v.dim() == 1 and v.numel() == layout.size else v)
                 for k, v in bn.state_dict().items()}
        new_bn.load_state_dict(state)
        new_bn.train(bn.training)
        const = self._apply_to_constants(node, self._constant_of(node.args[0], layout))
        set_submodule(self.root, node.target, new_bn)
        return self._emit(node, first), _Layout(kept, const.masked_fill(_present(layout), 0))

    def _linear(self, node: fx.Node):
        first, layout = self.env[node.args[0]]
        if layout is None:
            return self._emit(node, first), None
        if len(_meta_shape(node.args[0])) != 2:
            return self._fallback(node)
        linear = self._module(node)
        with torch.no_grad():
            weight = linear.weight
            shift = weight @ layout.const.to(weight.dtype)
            bias = shift if linear.bias is None else linear.bias + shift
            new = nn.Linear(layout.kept.numel(), linear.out_features, bias=True,
                            device=weight.device, dtype=weight.dtype)
            new.weight.copy_(weight[:, layout.kept])
            new.bias.copy_(bias)
        set_submodule(self.root, node.target, new)
        return self._emit(node, first), None

    def _conv(self, node: fx.Node):
        conv: nn.Conv2d = self._module(node)
        name, x_node = node.target, node.args[0]
        layout = self.env[x_node][1]
        keep = self.keep[name].cpu()
        g = conv.groups
        c_out, cin_g, kh, kw = conv.weight.shape
        cout_g = c_out // g
        # output side: groups with an unmasked filter stay, each with k_max filters (masked
        # extras get zero weights, so they emit their bias exactly as in the masked model)
        keep_g = keep.view(g, cout_g)
        active = keep_g.any(1)
        n_active, k_max = int(active.sum()), int(keep_g.sum(1).max())
        order = torch.argsort((~keep_g).to(torch.int8), dim=1, stable=True)[:, :k_max]
        chosen = order.sort(dim=1).values + torch.arange(g)[:, None] * cout_g
        out_idx = chosen[active].flatten()
        # input side: absent channels of the active groups are folded (equal count per group)
        # or put back by an Assemble
        present = (torch.ones(g * cin_g, dtype=torch.bool) if layout is None
                   else _present(layout)).view(g, cin_g)[active]
        counts = present.sum(1)
        fold = bool((counts == counts[0]).all()) and int(counts[0]) > 0
        local = (torch.nonzero(present)[:, 1].view(n_active, -1) if fold
                 else torch.arange(cin_g).expand(n_active, cin_g))
        in_idx = (torch.arange(g)[active][:, None] * cin_g + local).flatten()
        x_phys = self._assemble(x_node, in_idx)

        device, dtype = conv.weight.device, conv.weight.dtype
        with torch.no_grad():
            weight = conv.weight * keep.to(device, dtype).view(-1, 1, 1, 1)
            group_pos = torch.arange(n_active).repeat_interleave(k_max)
            gather = local[group_pos][:, :, None, None].expand(-1, -1, kh, kw).to(device)
            new_weight = weight[out_idx.to(device)].gather(1, gather)
            bias = conv.bias[out_idx.to(device)].clone() if conv.bias is not None else None
            kernel = None
            if fold and not bool(present.all()):
                # kernel[o] = Σ_{absent c} a_c·W[o, c], group by group
                absent = layout.const.to(device, dtype).view(g, cin_g)
                kernel = torch.einsum("goihw,gi->gohw", weight.view(g, cout_g, cin_g, kh, kw),
                                      absent).reshape(c_out, 1, kh, kw)[out_idx.to(device)]
            use_border = kernel is not None and _zero_padded(conv) and (
                name in self.border_given if self.border_given is not None
                else bool(kernel.any()))
            if kernel is not None and not use_border:
                bias = kernel.sum((1, 2, 3)) + (bias if bias is not None else 0)
            elif use_border and bias is None:
                bias = weight.new_zeros(out_idx.numel())
            new_conv = nn.Conv2d(in_idx.numel(), out_idx.numel(), (kh, kw), conv.stride,
                                 conv.padding, conv.dilation, groups=n_active,
                                 bias=bias is not None, padding_mode=conv.padding_mode,
                                 device=device, dtype=dtype)
            new_conv.weight.copy_(new_weight)
            if bias is not None:
                new_conv.bias.copy_(bias)
        new_conv.train(conv.training)
        set_submodule(self.root, name, new_conv)
        out = self._emit(node, x_phys)
        if use_border:
            border_name = f"{name}_border"
            set_submodule(self.root, border_name,
                          BorderCorrection(kernel, conv.stride, conv.padding, conv.dilation))
            out = self.graph.call_module(border_name, (x_phys, out))
            self.border_used.add(name)
        if out_idx.numel() == c_out:
            return out, None
        const = conv.bias.detach().clone() if conv.bias is not None else weight.new_zeros(c_out)
        const[out_idx.to(device)] = 0
        return out, _Layout(out_idx, const)


# ---- graph predicates ------------------------------------------------------------------------
def _no_nodes(items) -> bool:
    found = []
    fx.node.map_arg(items, found.append)
    return not found


def _present(layout: _Layout) -> torch.Tensor:
    present = torch.zeros(layout.size, dtype=torch.bool, device=layout.kept.device)
    present[layout.kept] = True
    return present


def _meta_shape(node) -> tuple | None:
    meta = node.meta.get("tensor_meta") if isinstance(node, fx.Node) else None
    return tuple(meta.shape) if meta is not None and hasattr(meta, "shape") else None


def _zero_padded(conv: nn.Conv2d) -> bool:
    if conv.padding_mode != "zeros":
        return False
    if isinstance(conv.padding, str):
        return conv.padding == "same" and any(
            (k - 1) * d > 0 for k, d in zip(conv.kernel_size, conv.dilation))
    return any(p > 0 for p in conv.padding)


def _avg_pool_keeps_constants(pool) -> bool:
    padding = pool.padding if isinstance(pool.padding, tuple) else (pool.padding,)
    no_pad = all(p == 0 for p in padding)
    return getattr(pool, "divisor_override", None) is None and (
        (no_pad and not pool.ceil_mode) or not pool.count_include_pad)


def _flatten_from_1(args, kwargs) -> bool:
    start = args[0] if args else kwargs.get("start_dim", 0)
    end = args[1] if len(args) > 1 else kwargs.get("end_dim", -1)
    return start == 1 and end == -1


def _is_batch_flatten(node: fx.Node) -> bool:
    """view/reshape(x, batch, -1) of a ≥3-d tensor: the same as flatten(x, 1)."""
    shape = node.args[1:]
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = tuple(shape[0])
    in_shape, out_shape = _meta_shape(node.args[0]), _meta_shape(node)
    return (len(shape) == 2 and shape[1] == -1 and in_shape is not None and len(in_shape) >= 3
            and out_shape is not None and len(out_shape) == 2 and out_shape[0] == in_shape[0])


def _spatial_reduction(node: fx.Node) -> bool:
    """mean/amax over dims that exclude the channel dim 1."""
    dims = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
    in_shape = _meta_shape(node.args[0])
    if dims is None or in_shape is None or len(node.args) > 3:
        return False
    dims = dims if isinstance(dims, (tuple, list)) else (dims,)
    return all(isinstance(d, int) and d % len(in_shape) >= 2 for d in dims)
