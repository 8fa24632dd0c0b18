"""The per-op rules of the dependency analysis (aten ops of a `torch.export` graph), by category of
the op registry (`ops`).

A rule reads the channel layouts (`Tracked`) of its inputs, registers the model parameters it
touches as members of their spaces, unites or fixes spaces, and returns the layout of its output
(None: no prunable channels; a list for ops returning several tensors). An op whose category has no rule fixes
every space it reads (`unknown_op`), so an unknown op can cost speed, never exactness.

Attention: `reshape` splits a channel dim of H·d into (H, d) by coarsening its space to H units
(`_split_channel_dim`); `split` cuts a fused projection's space into parts (`_cut`); `matmul`
unites the heads q·kᵀ and attn·v share along a batch dim, `attention` those of
scaled_dot_product_attention's q, k, v (grouped-query: a query group per KV head); `softmax`,
`masked_fill` and `expand` keep the heads; `addmm` (and x @ W) is a dense layer with W stored
(in, out), Hugging Face's Conv1D. Exactness of a head's removal: its q, k and v rows (biases
included) are zeroed in the masked model, so its scores are 0, its attention uniform over zero
values, its output 0 — and the o-projection's columns that read it are members too.
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
    """y = x·Wᵀ + b, W stored (out, in)."""
    return _dense(a, node, node.args[0], node.args[1], _arg(node, 2, "bias"), w_in=1, w_out=0)


def addmm(a: DependencyAnalysis, node: fx.Node):
    """y = b + x·W with W stored (in, out) (Hugging Face's Conv1D: GPT-2's c_attn, c_fc, …)."""
    return _dense(a, node, node.args[1], node.args[2], node.args[0], w_in=0, w_out=1)


def _dense(a: DependencyAnalysis, node: fx.Node, x, weight, bias, w_in: int, w_out: int):
    """A dense layer over the last dim: W reads x's channels along `w_in`, writes a new space of
    its own along `w_out`; the bias writes it too."""
    tracked = a.get(x)
    if a.state_name(weight) is None or len(_shape(weight)) != 2:
        return unknown_op(a, node)
    if tracked is not None:
        if tracked.dim != len(_shape(x)) - 1:
            a.fix_tracked(tracked, "a Linear reads it along another dim")
        elif not a.add_member(tracked, weight, w_in, "in"):
            a.fix_tracked(tracked, "read by a slice of a weight along its other dim")
    out_shape = _shape(node)
    out = Tracked(len(out_shape) - 1, (Segment(a.new_space(out_shape[-1]), out_shape[-1]),))
    a.add_member(out, weight, w_out, "out")
    if bias is not None and len(_shape(bias)) == 1:
        a.add_member(out, bias, 0, "out")
    return out


def matmul(a: DependencyAnalysis, node: fx.Node):
    """x @ y (matmul, bmm, mm) of activations: channels along a batch dim of both (attention heads
    in q·kᵀ and attn·v) unite and stay; channels contracted in both unite and vanish (a removed
    channel is removed from both sides); x @ W with W model state (in, out) is a dense layer."""
    x, y = node.args[0], node.args[1]
    sx, sy, so = _shape(x), _shape(y), _shape(node)
    tx, ty = a.get(x), a.get(y)
    if len(sx) < 2 or len(sy) < 2:
        return unknown_op(a, node)
    if a.state_name(y) is not None and ty is None and len(sy) == 2:
        return _dense(a, node, x, y, None, w_in=0, w_out=1)
    wx = _matmul_dim(tx.dim, len(sx), len(so), left=True) if tx is not None else None
    wy = _matmul_dim(ty.dim, len(sy), len(so), left=False) if ty is not None else None
    if tx is not None and ty is not None and wx == wy:
        both = a.unify(tx, ty, str(node.target))
        if both is None or wx == "k":
            return None
        a.heads.update(s.space for s in both.segments)
        return Tracked(wx, both.segments)
    t, where = (tx, wx) if ty is None else (ty, wy)
    if (tx is None) != (ty is None) and where != "k":
        return Tracked(where, t.segments)
    for t in (tx, ty):
        a.fix_tracked(t, f"read by {node.target} along a dim the other operand does not share")
    return None


def _matmul_dim(dim: int, ndim: int, out_ndim: int, left: bool) -> int | str:
    """Where an operand's dim goes in x @ y: "k" (contracted: x's last, y's second to last), the
    output's rows (x) or columns (y), or a broadcast batch dim."""
    if dim == ndim - (1 if left else 2):
        return "k"
    if dim == ndim - (2 if left else 1):
        return out_ndim - (2 if left else 1)
    return dim + out_ndim - ndim


def attention(a: DependencyAnalysis, node: fx.Node):
    """scaled_dot_product_attention(q, k, v, mask, …), shapes (…, heads, length, head_dim): q's,
    k's and v's heads unite (with grouped-query attention a KV head and its query group) and
    the output keeps them; a mask that carries channels, or channels along another dim, fix them."""
    q, k, v = (a.get(node.args[i]) for i in range(3))
    mask = a.get(_arg(node, 3, "attn_mask"))
    a.fix_tracked(mask, "used as an attention mask")
    heads_dim = len(_shape(node)) - 3
    tracked = [t for t in (q, k, v) if t is not None]
    if len(tracked) < 3 or any(t.dim != heads_dim for t in tracked):
        for t in tracked:
            a.fix_tracked(t, "read by scaled_dot_product_attention, not along the heads of q, k and v")
        return None
    sq, sk = q.segments, k.segments
    if len(sq) == len(sk) == 1 and sq[0].inner == sk[0].inner and sq[0].size > sk[0].size \
            and sq[0].size % sk[0].size == 0:  # enable_gqa=True: query head h reads KV head h // g
        a.coarsen(sq[0].space, sq[0].size // sk[0].size)
        q = a.refresh(q)
        a.union(q.segments[0].space, sk[0].space)
        kv = a.unify(k, v, "scaled_dot_product_attention")
        out = q if kv is not None else None
    else:
        qk = a.unify(q, k, "scaled_dot_product_attention")
        out = a.unify(qk, v, "scaled_dot_product_attention") if qk is not None else None
    if out is None:
        for t in (q, k, v):
            a.fix_tracked(t, "scaled_dot_product_attention of q, k, v whose heads do not match")
        return None
    segments = a.refresh(out).segments
    a.heads.update(s.space for s in segments)
    return Tracked(heads_dim, segments)


def softmax(a: DependencyAnalysis, node: fx.Node):
    """softmax(x, dim): per channel unless taken over the channels."""
    tracked = a.get(node.args[0])
    if tracked is not None and node.args[1] % len(_shape(node)) == tracked.dim:
        return unknown_op(a, node)
    return tracked


def select(a: DependencyAnalysis, node: fx.Node):
    """select(x, dim, i) / slice(x, dim, …) along another dim than the channels' (a whole slice
    along them is x); a slice of a model tensor is a view of it for the layer that reads it."""
    tracked = a.get(node.args[0])
    if tracked is None:
        name = a.state_name(node.args[0])
        if name is not None and node.target is torch.ops.aten.slice.Tensor \
                and node.args[0] not in a.views and _arg(node, 4, "step", 1) == 1:
            dim = _arg(node, 1, "dim", 0) % len(_shape(node.args[0]))
            start = _arg(node, 2, "start", 0) or 0
            a.views[node] = (name, dim, start % _shape(node.args[0])[dim] if start < 0 else start)
        return None
    ndim = len(_shape(node.args[0]))
    dim = _arg(node, 1, "dim", 0) % ndim
    if dim == tracked.dim:
        if _shape(node) == _shape(node.args[0]):
            return tracked
        a.fix_tracked(tracked, f"indexed along its channels by {node.target}")
        return None
    dropped = len(_shape(node)) < ndim and dim < tracked.dim
    return Tracked(tracked.dim - dropped, tracked.segments)


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
    split = _split_channel_dim(a, tracked, in_shape, out_shape)
    return split if split is not None else unknown_op(a, node)


def _split_channel_dim(a: DependencyAnalysis, tracked: Tracked, in_shape, out_shape) -> Tracked | None:
    """(…, A·B, …) → (…, A, B, …): the channels follow the outer factor A, a unit covering B
    positions (heads: A = H, B = head_dim). A space whose channels are finer than B is coarsened
    to units of B/inner channels; None if the layout does not align with B."""
    d = tracked.dim
    before, size = math.prod(in_shape[:d]), in_shape[d]
    for j in range(len(out_shape)):
        if math.prod(out_shape[:j]) != before or out_shape[j] in (1, size) or size % out_shape[j]:
            continue
        if not any(math.prod(out_shape[j:e]) == size for e in range(j + 2, len(out_shape) + 1)):
            continue
        block = size // out_shape[j]
        segments, offset = [], 0
        for s in tracked.segments:
            if offset % block or (s.size * s.inner) % block:
                return None
            offset += s.size * s.inner
            if s.inner % block == 0:
                segments.append(Segment(s.space, s.size, s.inner // block))
            elif block % s.inner == 0 and a.sizes[a.find(s.space)] == s.size:
                new = a.coarsen(s.space, block // s.inner)
                segments.append(Segment(new, a.sizes[new]))
            else:
                return None
        return Tracked(j, tuple(segments))
    return None


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
        pieces = _cut(a, tracked, [v.shape[tracked.dim] for v in node.meta["val"]])
        if pieces is None:
            a.fix_tracked(tracked, "split along its channels (sizes are constants of the forward)")
        return pieces
    return [tracked] * len(node.meta["val"])


def _cut(a: DependencyAnalysis, tracked: Tracked, sizes: list[int]) -> list[Tracked] | None:
    """The layouts of consecutive pieces of `sizes` positions along the channel dim (a fused q/k/v
    projection split into q, k, v): a space cut by a piece boundary is split there. The forward's
    split sizes must follow a removal (attributes such as `split_size` are patched; a forward that
    computes them otherwise is caught by running it). None where no space is cut (pieces of whole
    spaces concatenated before: sizes the forward writes itself) or a cut falls inside a channel."""
    bounds = {sum(sizes[:i]) for i in range(1, len(sizes))}
    edges = {sum(s.size * s.inner for s in tracked.segments[:i]) for i in range(len(tracked.segments))}
    if bounds <= edges:  # pieces of whole spaces: split sizes written in the forward (SplitNet)
        return None
    offset = 0
    for s in tracked.segments:
        cuts = sorted(b - offset for b in bounds if offset < b < offset + s.size * s.inner)
        if any(c % s.inner for c in cuts) or (cuts and a.sizes[a.find(s.space)] != s.size):
            return None
        if cuts:
            channels = [c // s.inner for c in cuts]
            a.split_space(s.space, [hi - lo for lo, hi in zip([0, *channels], [*channels, s.size])])
        offset += s.size * s.inner
    tracked = a.refresh(tracked)
    pieces, offset, start = [], 0, 0
    segments = list(tracked.segments)
    for size in sizes:
        taken = []
        while segments and offset < start + size:
            taken.append(segments.pop(0))
            offset += taken[-1].size * taken[-1].inner
        pieces.append(Tracked(tracked.dim, tuple(taken)))
        start += size
    return pieces


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
    Op.ADDMM: addmm,
    Op.MATMUL: matmul,
    Op.ATTENTION: attention,
    Op.SOFTMAX: softmax,
    Op.SELECT: select,
    Op.EXPAND: channelwise,
    Op.MASKED: channelwise,
}


def rule_of(target):
    """The rule for a call_function target of the exported graph (`unknown_op` if none)."""
    return RULES.get(exported_op(target), unknown_op)
