"""The per-op rules of the dependency analysis (aten ops of a `torch.export` graph), by category of
the op registry (`ops`).

A rule reads the channel layouts (`Tracked`) of its inputs, registers the model parameters it
touches as members of their spaces, unites or fixes spaces, and returns the layout of its output
(None: no prunable channels; a list for ops returning several tensors). An op whose category has no rule fixes
every space it reads (`unknown_op`), so an unknown op can cost speed, never exactness.
"""
from __future__ import annotations

import math

import torch
from torch import fx

from .groups import DependencyAnalysis, Segment, Tracked
from .ops import Op, exported_op


def _shape(node) -> tuple | None:
    value = node.meta.get("val") if isinstance(node, fx.Node) else None
    return tuple(value.shape) if isinstance(value, torch.Tensor) else None


def _arg(node: fx.Node, i: int, name: str, default=None):
    if len(node.args) > i:
        return node.args[i]
    return node.kwargs.get(name, default)


def unknown_op(a: DependencyAnalysis, node: fx.Node):
    for tracked in a.tracked_args((node.args, node.kwargs)):
        a.fix_tracked(tracked, f"read by {node.target}, which has no channel rule")
    return None


def channelwise(a: DependencyAnalysis, node: fx.Node):
    """Element-wise and per-channel ops (activations, dropout, pools, upsampling): layout kept."""
    tracked = a.get(node.args[0])
    out = _shape(node)
    if tracked is None or out is None:
        return unknown_op(a, node) if tracked is not None else None
    if len(out) != len(_shape(node.args[0])) or out[tracked.dim] != _shape(node.args[0])[tracked.dim]:
        return unknown_op(a, node)
    extra = a.tracked_args((node.args[1:], node.kwargs))
    for other in extra:
        a.fix_tracked(other, f"an extra argument of {node.target}")
    return tracked


def pooled_pair(a: DependencyAnalysis, node: fx.Node):
    """max_pool2d_with_indices & co: (values, indices), both per channel."""
    tracked = a.get(node.args[0])
    return [tracked, tracked] if tracked is not None else None


def getitem(a: DependencyAnalysis, node: fx.Node):
    parts = a.tracked.get(node.args[0])
    return parts[node.args[1]] if isinstance(parts, list) else None


def conv(a: DependencyAnalysis, node: fx.Node):
    """conv{1,2,3}d and conv_transpose{1,2,3}d (weight dims swapped: in = 0, out = 1)."""
    transposed = exported_op(node.target) is Op.CONV_TRANSPOSE
    x, weight, bias = node.args[0], node.args[1], _arg(node, 2, "bias")
    groups = _arg(node, 6, "groups", 1)
    tracked = a.get(x)
    if tracked is not None and tracked.dim != 1:
        a.fix_tracked(tracked, "a conv reads it along another dim")
        tracked = None
    c_in, c_out = _shape(x)[1], _shape(node)[1]
    w_in, w_out = (0, 1) if transposed else (1, 0)
    if a.state_name(weight) is None:
        return unknown_op(a, node)
    if groups == 1:
        if tracked is not None:
            a.add_member(tracked, weight, w_in, "in")
        out = Tracked(1, (Segment(a.new_space(c_out), c_out),))
    elif groups == c_in and not transposed and c_out % c_in == 0:  # depthwise, multiplier m
        if tracked is None:
            return None
        out = tracked.with_inner(c_out // c_in)
    else:
        a.fix_tracked(tracked, "read by a grouped conv")
        return None
    a.add_member(out, weight, w_out, "out")
    if bias is not None:
        a.add_member(out, bias, 0, "out")
    return out


def linear(a: DependencyAnalysis, node: fx.Node):
    x, weight, bias = node.args[0], node.args[1], _arg(node, 2, "bias")
    tracked = a.get(x)
    if a.state_name(weight) is None:
        return unknown_op(a, node)
    if tracked is not None:
        if tracked.dim != len(_shape(x)) - 1:
            a.fix_tracked(tracked, "a Linear reads it along another dim")
        else:
            a.add_member(tracked, weight, 1, "in")
    out_shape = _shape(node)
    out = Tracked(len(out_shape) - 1, (Segment(a.new_space(out_shape[-1]), out_shape[-1]),))
    a.add_member(out, weight, 0, "out")
    if bias is not None:
        a.add_member(out, bias, 0, "out")
    return out


def batch_norm(a: DependencyAnalysis, node: fx.Node):
    tracked = a.get(node.args[0])
    if tracked is None:
        return None
    if tracked.dim != 1:
        return unknown_op(a, node)
    for i in range(1, 5):  # weight, bias, running_mean, running_var
        if node.args[i] is not None:
            a.add_member(tracked, node.args[i], 0, "norm")
    return tracked


def normalization(a: DependencyAnalysis, node: fx.Node):
    """layer_norm(x, shape, w, b) and group_norm(x, groups, w, b): statistics over the channels."""
    tracked = a.get(node.args[0])
    if tracked is None:
        return None
    ndim = len(_shape(node.args[0]))
    is_layer = exported_op(node.target) is Op.LAYER_NORM
    first = ndim - len(node.args[1]) if is_layer else 1
    if tracked.dim < first:
        return tracked
    a.fix_tracked(tracked, f"normalized over by {node.target} (its statistics count every channel)")
    for arg in (_arg(node, 2, "weight"), _arg(node, 3, "bias")):
        if arg is not None:
            a.add_member(tracked, arg, tracked.dim - first, "norm")
    return tracked


def binary(a: DependencyAnalysis, node: fx.Node):
    """add/sub/mul/div with broadcasting: tensors that carry the channels unite their spaces;
    a parameter of the channels' size (layer scale) becomes a member."""
    out_shape = _shape(node)
    operands = [x for x in node.args[:2] if isinstance(x, fx.Node)]
    tracked = [(x, a.get(x)) for x in operands if a.get(x) is not None]
    if not tracked:
        return None
    out_dims = {t.dim + len(out_shape) - len(_shape(x)) for x, t in tracked}
    if len(out_dims) != 1:
        for _, t in tracked:
            a.fix_tracked(t, f"operands of {node.target} carry channels along different dims")
        return None
    out_dim = out_dims.pop()
    result = tracked[0][1]
    for x in operands:
        shape, offset = _shape(x), len(out_shape) - len(_shape(x))
        dim = out_dim - offset
        if a.get(x) is not None or dim < 0 or shape[dim] == 1:
            continue
        if not a.add_member(result, x, dim, "scale"):  # a full-size tensor that is not model state
            for _, t in tracked:
                a.fix_tracked(t, f"combined by {node.target} with a tensor that has no channel layout")
            return None
    for x, t in tracked[1:]:
        result = a.unify(result, t, str(node.target)) if result is not None else None
    if result is None:
        return None
    return Tracked(out_dim, result.segments)


def cat(a: DependencyAnalysis, node: fx.Node):
    tensors = node.args[0]
    ndim = len(_shape(node))
    dim = _arg(node, 1, "dim", 0) % ndim
    layouts = [a.get(t) for t in tensors]
    if all(t is not None and t.dim == dim for t in layouts):
        return Tracked(dim, tuple(s for t in layouts for s in t.segments))
    if any(t is not None and t.dim == dim for t in layouts):  # channels from outside a layer
        segments = []
        for t, x in zip(layouts, tensors):
            if t is not None and t.dim == dim:
                segments.extend(t.segments)
            else:
                a.fix_tracked(t, "concatenated along another dim")
                size = _shape(x)[dim]
                space = a.new_space(size)
                a.fix(space, "not written by a layer (concatenated from elsewhere)")
                segments.append(Segment(space, size))
        return Tracked(dim, tuple(segments))
    result = None
    for t in layouts:
        if t is None:
            for other in layouts:
                a.fix_tracked(other, "concatenated with a tensor that has no channel layout")
            return None
        result = t if result is None else a.unify(result, t, "cat")
    return result


def permute(a: DependencyAnalysis, node: fx.Node):
    tracked = a.get(node.args[0])
    if tracked is None:
        return None
    ndim = len(_shape(node))
    dims = [d % ndim for d in node.args[1]]
    return Tracked(dims.index(tracked.dim), tracked.segments)


def transpose(a: DependencyAnalysis, node: fx.Node):
    tracked = a.get(node.args[0])
    if tracked is None:
        return None
    ndim = len(_shape(node))
    d0, d1 = node.args[1] % ndim, node.args[2] % ndim
    swap = {d0: d1, d1: d0}
    return Tracked(swap.get(tracked.dim, tracked.dim), tracked.segments)


def reshape(a: DependencyAnalysis, node: fx.Node):
    """view/reshape/flatten/(un)squeeze: the channel dim may absorb the dims right after it
    (channel c then covers their product of features); merging it with dims before it or
    splitting it fixes its spaces."""
    tracked = a.get(node.args[0])
    if tracked is None:
        return None
    in_shape, out_shape = _shape(node.args[0]), _shape(node)
    d = tracked.dim
    before = math.prod(in_shape[:d])
    for j in range(len(out_shape)):
        if math.prod(out_shape[:j]) != before:
            continue
        for e in range(d + 1, len(in_shape) + 1):
            if math.prod(in_shape[d:e]) == out_shape[j]:
                return tracked.with_inner(math.prod(in_shape[d + 1:e]), dim=j)
    return unknown_op(a, node)


def reduction(a: DependencyAnalysis, node: fx.Node):
    """mean/sum/amax/amin over dims: fine unless the channel dim is reduced."""
    tracked = a.get(node.args[0])
    if tracked is None:
        return None
    ndim = len(_shape(node.args[0]))
    dims = _arg(node, 1, "dim")
    dims = list(range(ndim)) if dims is None else [dims] if isinstance(dims, int) else list(dims)
    dims = {d % ndim for d in dims}
    if tracked.dim in dims:
        return unknown_op(a, node)
    keepdim = _arg(node, 2, "keepdim", False)
    return Tracked(tracked.dim if keepdim else tracked.dim - sum(d < tracked.dim for d in dims),
                   tracked.segments)


def split(a: DependencyAnalysis, node: fx.Node):
    """split/split_with_sizes/chunk: pieces along another dim keep the layout; a split along the
    channels fixes them, since the captured sizes (and usually the forward's) are constants."""
    tracked = a.get(node.args[0])
    if tracked is None:
        return None
    ndim = len(_shape(node.args[0]))
    if _arg(node, 2, "dim", 0) % ndim == tracked.dim:
        a.fix_tracked(tracked, "split along its channels (sizes are constants of the forward)")
        return None
    return [tracked] * len(node.meta["val"])


RULES = {  # category (`ops.Op`) → rule
    **dict.fromkeys((Op.ELEMENTWISE, Op.DROPOUT, Op.COPY, Op.POOL, Op.AVG_POOL, Op.UPSAMPLE, Op.PAD),
                    channelwise),
    Op.POOL_WITH_INDICES: pooled_pair,
    Op.GETITEM: getitem,
    Op.CONV: conv,
    Op.CONV_TRANSPOSE: conv,
    Op.LINEAR: linear,
    Op.BATCH_NORM: batch_norm,
    Op.LAYER_NORM: normalization,
    Op.GROUP_NORM: normalization,
    Op.BINARY: binary,
    Op.CONCAT: cat,
    Op.PERMUTE: permute,
    Op.TRANSPOSE: transpose,
    Op.FLATTEN: reshape,
    Op.RESHAPE: reshape,
    Op.MEAN_MAX: reduction,
    Op.SUM: reduction,
    Op.SPLIT: split,
}


def rule_of(target):
    """The rule for a call_function target of the exported graph (`unknown_op` if none)."""
    return RULES.get(exported_op(target), unknown_op)
