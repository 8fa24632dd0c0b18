"""The per-op rules of the per-layer pass (`coupled=False`), by category of the op registry
(`sparsefw.graph.ops`).

Each rule maps one fx node of the original graph to (new node, Layout | None) in the graph being
built (`FilterSurgery`), keeping the channels along dim 1 that are physically present and the
constants the removed ones carry. `find_rule` takes the node's category (module, function or
method alike) and its entry in `RULES`: a rule and a guard on the node's arguments or module
(e.g. a flatten must start at dim 1); a node with no category, no entry or a failing guard falls
back to the full tensor (`FilterSurgery.fallback`).
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch import fx, nn

from ...graph.ops import Op, fx_op
from .._modules import BorderCorrection
from .._util import set_submodule
from .layout import (Layout, avg_pool_keeps_constants, flatten_from_1, is_batch_flatten, meta_shape,
                     no_nodes, present_mask, spatial_reduction, zero_padded)

if TYPE_CHECKING:
    from .per_layer import FilterSurgery

# ---- rules -----------------------------------------------------------------------------------
def metadata(s: FilterSurgery, node: fx.Node):
    return s.emit(node, s.env[node.args[0]][0]), None

def passthrough(s: FilterSurgery, node: fx.Node):
    """Ops that map each channel on its own and keep a constant channel constant."""
    if not no_nodes((node.args[1:], node.kwargs)):
        return s.fallback(node)
    first, layout = s.env[node.args[0]]
    return s.emit(node, first), layout

def elementwise(s: FilterSurgery, node: fx.Node):
    if not no_nodes((node.args[1:], node.kwargs)):
        return s.fallback(node)
    first, layout = s.env[node.args[0]]
    new = s.emit(node, first)
    if layout is None:
        return new, None
    kwargs = {k: v for k, v in node.kwargs.items() if k != "inplace"}
    const = s.apply_to_constants(node, s.constant_of(node.args[0], layout),
                                     *node.args[1:], **kwargs)
    return new, Layout(layout.kept, const.masked_fill(present_mask(layout), 0))

def binary(s: FilterSurgery, node: fx.Node):
    """a ∘ b element-wise: runs on the union of present channels; constants combine."""
    tensors = list(dict.fromkeys(x for x in (*node.args, *node.kwargs.values())
                                 if isinstance(x, fx.Node)))
    out_shape = meta_shape(node)
    if out_shape is None or len(out_shape) < 2 or any(
            meta_shape(x) is None or len(meta_shape(x)) != len(out_shape)
            or meta_shape(x)[1] != out_shape[1] for x in tensors):
        return s.fallback(node)
    layouts = [s.env[x][1] for x in tensors]
    if any(layout is None for layout in layouts):
        return s.fallback(node)
    channels = out_shape[1]
    union = torch.zeros(channels, dtype=torch.bool)
    for layout in layouts:
        union[layout.kept] = True
    target = torch.nonzero(union).flatten()
    physical = {x: s.assemble(x, target) for x in tensors}
    args = fx.node.map_arg(node.args, physical.__getitem__)
    kwargs = fx.node.map_arg(node.kwargs, physical.__getitem__)
    new = s.graph.create_node(node.op, node.target, args, kwargs, node.name)
    if target.numel() == channels:
        return new, None
    constants = {x: s.constant_of(x, layout) for x, layout in zip(tensors, layouts)}
    const = s.apply_to_constants(
        node, *fx.node.map_arg(node.args, lambda x: constants[x].clone()),
        **fx.node.map_arg(node.kwargs, lambda x: constants[x].clone()))
    present = union.to(const.device)
    return new, Layout(target, const.masked_fill(present, 0))

def cat(s: FilterSurgery, node: fx.Node):
    tensors = node.args[0] if node.args else node.kwargs["tensors"]
    dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
    if not isinstance(tensors, (list, tuple)) or not all(isinstance(t, fx.Node) for t in tensors):
        return s.fallback(node)
    ndim = len(meta_shape(node))
    if dim % ndim != 1:
        return s.fallback(node)
    entries = [s.env[t] for t in tensors]
    new = s.graph.create_node(node.op, node.target, ([e[0] for e in entries],),
                                 {"dim": dim}, node.name)
    if all(layout is None for _, layout in entries):
        return new, None
    reference = next(layout for _, layout in entries if layout is not None)
    kept, const, offset = [], [], 0
    for t, (_, layout) in zip(tensors, entries):
        size = meta_shape(t)[1]
        if layout is None:
            kept.append(torch.arange(size, device=reference.kept.device) + offset)
            const.append(reference.const.new_zeros(size))
        else:
            kept.append(layout.kept + offset)
            const.append(layout.const)
        offset += size
    return new, Layout(torch.cat(kept), torch.cat(const))

def flatten(s: FilterSurgery, node: fx.Node):
    first, layout = s.env[node.args[0]]
    in_shape = meta_shape(node.args[0])
    inner = math.prod(in_shape[2:])
    consumers_are_linear = all(
        u.op == "call_module" and isinstance(s.module(u), nn.Linear) for u in node.users)
    if layout is None:
        return s.emit(node, first), None
    if inner != 1 and not consumers_are_linear:
        # a flattened channel layout is tied to the traced spatial size: keep it only where a
        # Linear (which fixes that size anyway) folds it right away
        return s.fallback(node)
    if not no_nodes(node.kwargs) or not all(
            not isinstance(a, fx.Node) or s.env[a][1] is None for a in node.args[1:]):
        return s.fallback(node)
    offsets = torch.arange(inner, device=layout.kept.device)
    kept = (layout.kept[:, None] * inner + offsets).flatten()
    return s.emit(node, first), Layout(kept, layout.const.repeat_interleave(inner))

def batchnorm(s: FilterSurgery, node: fx.Node):
    first, layout = s.env[node.args[0]]
    bn = s.module(node)
    if layout is None:
        return s.emit(node, first), None
    kept = layout.kept
    new_bn = type(bn)(kept.numel(), eps=bn.eps, momentum=bn.momentum, affine=bn.affine,
                      track_running_stats=True, device=bn.running_mean.device,
                      dtype=bn.running_mean.dtype)
    state = {k: (v[kept] if v.dim() == 1 and v.numel() == layout.size else v)
             for k, v in bn.state_dict().items()}
    new_bn.load_state_dict(state)
    new_bn.train(bn.training)
    const = s.apply_to_constants(node, s.constant_of(node.args[0], layout))
    set_submodule(s.root, node.target, new_bn)
    return s.emit(node, first), Layout(kept, const.masked_fill(present_mask(layout), 0))

def linear(s: FilterSurgery, node: fx.Node):
    first, layout = s.env[node.args[0]]
    if layout is None:
        return s.emit(node, first), None
    if len(meta_shape(node.args[0])) != 2:
        return s.fallback(node)
    linear = s.module(node)
    with torch.no_grad():
        weight = linear.weight
        shift = weight @ layout.const.to(weight.dtype)
        bias = shift if linear.bias is None else linear.bias + shift
        new = nn.Linear(layout.kept.numel(), linear.out_features, bias=True,
                        device=weight.device, dtype=weight.dtype)
        new.weight.copy_(weight[:, layout.kept])
        new.bias.copy_(bias)
    set_submodule(s.root, node.target, new)
    return s.emit(node, first), None

def _conv_channels(keep: torch.Tensor, groups: int, cin_g: int, layout):
    """Which channels a grouped conv keeps: (n_active groups, k_max filters per group, out_idx, present
    input channels per active group, fold, local input index per active group, in_idx).
    Output side: groups with an unmasked filter stay, each with k_max filters (masked extras get zero
    weights, so they emit their bias exactly as in the masked model). Input side: absent channels of
    the active groups are folded (equal count per group) or put back by an Assemble."""
    g = groups
    keep_g = keep.view(g, -1)
    cout_g = keep_g.shape[1]
    active = keep_g.any(1)
    n_active, k_max = int(active.sum()), int(keep_g.sum(1).max())
    order = torch.argsort((~keep_g).to(torch.int8), dim=1, stable=True)[:, :k_max]
    chosen = order.sort(dim=1).values + torch.arange(g)[:, None] * cout_g
    out_idx = chosen[active].flatten()
    present = (torch.ones(g * cin_g, dtype=torch.bool) if layout is None
               else present_mask(layout)).view(g, cin_g)[active]
    counts = present.sum(1)
    fold = bool((counts == counts[0]).all()) and int(counts[0]) > 0
    local = (torch.nonzero(present)[:, 1].view(n_active, -1) if fold
             else torch.arange(cin_g).expand(n_active, cin_g))
    in_idx = (torch.arange(g)[active][:, None] * cin_g + local).flatten()
    return n_active, k_max, out_idx, present, fold, local, in_idx


def conv(s: FilterSurgery, node: fx.Node):
    conv: nn.Conv2d = s.module(node)
    name, x_node = node.target, node.args[0]
    layout = s.env[x_node][1]
    keep = s.keep[name].cpu()
    g = conv.groups
    c_out, cin_g, kh, kw = conv.weight.shape
    cout_g = c_out // g
    n_active, k_max, out_idx, present, fold, local, in_idx = _conv_channels(keep, g, cin_g, layout)
    x_phys = s.assemble(x_node, in_idx)

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
        use_border = kernel is not None and zero_padded(conv) and (
            name in s.border_given if s.border_given is not None
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
    set_submodule(s.root, name, new_conv)
    out = s.emit(node, x_phys)
    if use_border:
        border_name = f"{name}_border"
        set_submodule(s.root, border_name,
                      BorderCorrection(kernel, conv.stride, conv.padding, conv.dilation))
        out = s.graph.call_module(border_name, (x_phys, out))
        s.border_used.add(name)
    if out_idx.numel() == c_out:
        return out, None
    const = conv.bias.detach().clone() if conv.bias is not None else weight.new_zeros(c_out)
    const[out_idx.to(device)] = 0
    return out, Layout(out_idx, const)


# ---- rules by category ---------------------------------------------------------------------
def _module_is(predicate):
    """A guard: the node calls a module for which `predicate` holds."""
    return lambda s, n: n.op == "call_module" and predicate(s.module(n))

def _flattens_from_1(s: FilterSurgery, node: fx.Node) -> bool:
    if node.op == "call_module":
        module = s.module(node)
        return module.start_dim == 1 and module.end_dim == -1
    return flatten_from_1(node.args[1:], node.kwargs)

RULES = {  # category (`sparsefw.graph.ops.Op`) → (rule, guard(s, node) or None)
    Op.CONV: (conv, _module_is(lambda m: isinstance(m, nn.Conv2d))),
    Op.BATCH_NORM: (batchnorm, _module_is(lambda m: m.track_running_stats)),
    Op.LINEAR: (linear, None),
    Op.ELEMENTWISE: (elementwise, None),
    Op.PRELU: (elementwise, _module_is(lambda m: m.num_parameters == 1)),
    Op.DROPOUT: (passthrough, None),
    Op.POOL: (passthrough, None),
    Op.AVG_POOL: (passthrough, _module_is(avg_pool_keeps_constants)),
    Op.BINARY: (binary, None),
    Op.CONCAT: (cat, None),
    Op.FLATTEN: (flatten, _flattens_from_1),
    Op.RESHAPE: (flatten, lambda s, n: is_batch_flatten(n)),
    Op.MEAN_MAX: (passthrough, lambda s, n: spatial_reduction(n)),
    Op.SIZE: (metadata, lambda s, n: n.args[1:] == (0,) or n.kwargs == {"dim": 0}),
    Op.NDIM: (metadata, None),
}


def find_rule(s: FilterSurgery, node: fx.Node):
    """The rule for `node`, or None (the node then sees full tensors, as does a module holding a
    tied tensor: a rule may rebuild the module, which would untie it)."""
    if node.op == "call_module" and s.is_tied(node):
        return None
    rule, guard = RULES.get(fx_op(node, s.gm), (None, None))
    return rule if guard is None or guard(s, node) else None
