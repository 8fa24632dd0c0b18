"""The one registry of per-op facts: which category (`Op`) every op the channel passes know is in.

Two graph levels name the same ops differently: a torch.fx trace (the per-layer pass of
`remove_filters`) calls modules, torch functions and tensor methods; a `torch.export` graph (the
dependency analysis, `group_rules`) calls aten overloads. `OPS[op]` lists the members of a category
at every level, each name once:

    modules    module types, matched with isinstance (first category in `OPS` order wins)
    functions  call_function targets of a torch.fx graph
    methods    call_method names of a torch.fx graph
    exported   call_function targets of an exported graph: "name" = every overload of
               torch.ops.aten.name, "name.overload" = that one, or a Python callable (getitem)

A consumer maps categories to its rules (`group_rules.RULES`, `per_layer_rules.RULES`); an op in
no category, or in one its consumer has no rule for, is unknown to it (which costs speed, never
exactness). A level lists only the members the consumers of that level handle alike.
"""
from __future__ import annotations

import enum
import functools
import operator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import fx, nn


class Op(enum.Enum):
    """Op categories (the value says what members share)."""

    ELEMENTWISE = "y = f(x) entry by entry (activations, clamp, abs, exp, identity)"
    PRELU = "y = max(0, x) + a·min(0, x), a per channel or one for all"
    DROPOUT = "the identity in eval mode"
    COPY = "the same values (copies, views of the whole tensor, dtype/device casts)"
    POOL = "per-channel max and adaptive pools: a constant channel pools to that constant"
    POOL_WITH_INDICES = "a per-channel max pool returning (values, indices)"
    AVG_POOL = "per-channel average pool (with padding, a constant channel need not stay one)"
    UPSAMPLE = "per-channel spatial resampling"
    PAD = "per-channel spatial padding"
    BINARY = "a ∘ b entry by entry with broadcasting (add, sub, mul, div)"
    CONCAT = "concatenation along one dim"
    SPLIT = "split into pieces along one dim"
    GETITEM = "one output of an op returning several"
    FLATTEN = "merge a range of dims"
    RESHAPE = "a new shape of the same entries (view, reshape, (un)squeeze)"
    PERMUTE = "reorder all dims"
    TRANSPOSE = "swap two dims"
    MEAN_MAX = "mean/amax/amin over dims: a constant reduces to that constant"
    SUM = "sum over dims"
    SIZE = "the size of a dim (no tensor data read)"
    NDIM = "the number of dims (no tensor data read)"
    CONV = "convolution y = W ⋆ x + b"
    CONV_TRANSPOSE = "transposed convolution (weight dims: in, out/groups, ...)"
    LINEAR = "y = x·Wᵀ + b over the last dim"
    BATCH_NORM = "per-channel affine map with running statistics"
    LAYER_NORM = "normalization over the trailing dims"
    GROUP_NORM = "normalization over groups of channels"
    ADDMM = "y = b + x·W, W stored (in, out) (Hugging Face's Conv1D)"
    MATMUL = "batched matrix product x @ y"
    ATTENTION = "scaled dot-product attention over (…, heads, length, head_dim)"
    SOFTMAX = "softmax along one dim"
    SELECT = "one index or a range of one dim"
    EXPAND = "broadcast to a larger shape"
    MASKED = "entries replaced where a mask holds"


@dataclass(frozen=True)
class OpSpec:
    """The members of one category at each graph level (see the module docstring)."""

    modules: tuple = ()
    functions: tuple = ()
    methods: tuple = ()
    exported: tuple = ()


_BINARY = ("add", "add_", "sub", "sub_", "mul", "mul_", "div", "div_")  # methods = aten packets

OPS: dict[Op, OpSpec] = {
    Op.CONV: OpSpec(modules=(nn.Conv1d, nn.Conv2d, nn.Conv3d),
                    exported=("conv1d.default", "conv2d.default", "conv3d.default")),
    Op.CONV_TRANSPOSE: OpSpec(
        modules=(nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d),
        exported=("conv_transpose1d.default", "conv_transpose2d.input", "conv_transpose3d.input")),
    Op.BATCH_NORM: OpSpec(modules=(nn.modules.batchnorm._BatchNorm,), exported=("batch_norm.default",)),
    Op.LINEAR: OpSpec(modules=(nn.Linear,), exported=("linear.default",)),
    Op.LAYER_NORM: OpSpec(modules=(nn.LayerNorm,), exported=("layer_norm.default",)),
    Op.GROUP_NORM: OpSpec(modules=(nn.GroupNorm,), exported=("group_norm.default",)),
    Op.ELEMENTWISE: OpSpec(
        modules=(nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU,
                 nn.Mish, nn.Sigmoid, nn.Tanh, nn.Hardtanh, nn.Hardswish, nn.Hardsigmoid,
                 nn.Softplus, nn.Identity),
        functions=(F.relu, torch.relu, torch.relu_, F.relu_, F.relu6, F.leaky_relu, F.elu, F.selu,
                   F.celu, F.gelu, F.silu, F.mish, F.hardswish, F.hardsigmoid, F.hardtanh,
                   F.softplus, torch.sigmoid, F.sigmoid, torch.tanh, F.tanh, torch.clamp,
                   torch.clip, torch.abs, torch.neg, torch.exp),
        methods=("relu", "relu_", "sigmoid", "sigmoid_", "tanh", "tanh_", "clamp", "clamp_",
                 "clip", "clip_", "abs", "neg", "exp"),
        exported=("relu", "relu_", "relu6", "hardtanh", "hardtanh_", "gelu", "gelu_", "silu",
                  "silu_", "sigmoid", "sigmoid_", "tanh", "tanh_", "hardswish", "hardswish_",
                  "hardsigmoid", "hardsigmoid_", "leaky_relu", "leaky_relu_", "elu", "elu_",
                  "selu", "celu", "mish", "mish_", "softplus", "exp", "neg", "abs", "clamp", "clamp_",
                  "clamp_min", "clamp_min_", "clamp_max", "pow.Tensor_Scalar", "rsqrt", "sqrt",
                  "erf", "cos", "sin", "square", "reciprocal")),
    Op.PRELU: OpSpec(modules=(nn.PReLU,)),
    Op.DROPOUT: OpSpec(
        modules=(nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout,
                 nn.FeatureAlphaDropout),
        functions=(F.dropout, F.dropout1d, F.dropout2d, F.dropout3d, F.alpha_dropout,
                   F.feature_alpha_dropout),
        exported=("dropout", "dropout_", "feature_dropout", "alpha_dropout",
                  "feature_alpha_dropout")),
    Op.COPY: OpSpec(exported=("clone", "contiguous", "alias", "detach", "_to_copy", "to")),
    Op.POOL: OpSpec(
        modules=(nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AdaptiveAvgPool1d,
                 nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d, nn.AdaptiveMaxPool1d,
                 nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d),
        functions=(F.max_pool1d, F.max_pool2d, F.max_pool3d, F.adaptive_avg_pool1d,
                   F.adaptive_avg_pool2d, F.adaptive_avg_pool3d, F.adaptive_max_pool1d,
                   F.adaptive_max_pool2d, F.adaptive_max_pool3d),
        exported=("max_pool1d", "max_pool2d", "max_pool3d", "adaptive_avg_pool1d",
                  "adaptive_avg_pool2d", "adaptive_avg_pool3d")),
    Op.POOL_WITH_INDICES: OpSpec(exported=("max_pool2d_with_indices.default",
                                           "adaptive_max_pool2d.default",
                                           "adaptive_max_pool1d.default")),
    Op.AVG_POOL: OpSpec(modules=(nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d),
                        exported=("avg_pool1d", "avg_pool2d", "avg_pool3d")),
    Op.UPSAMPLE: OpSpec(exported=("upsample_nearest2d", "upsample_bilinear2d")),
    Op.PAD: OpSpec(exported=("pad", "constant_pad_nd")),
    Op.BINARY: OpSpec(
        functions=(operator.add, operator.sub, operator.mul, operator.truediv, operator.iadd,
                   operator.isub, operator.imul, operator.itruediv, torch.add, torch.sub,
                   torch.mul, torch.div),
        methods=_BINARY,
        exported=tuple(f"{name}.{overload}" for name in _BINARY for overload in ("Tensor", "Scalar"))),
    Op.CONCAT: OpSpec(functions=(torch.cat, torch.concat), exported=("cat.default", "concat.default")),
    Op.SPLIT: OpSpec(exported=("split.Tensor", "split_with_sizes.default", "chunk.default")),
    Op.GETITEM: OpSpec(exported=(operator.getitem,)),
    Op.FLATTEN: OpSpec(modules=(nn.Flatten,), functions=(torch.flatten,), methods=("flatten",),
                       exported=("flatten.using_ints",)),
    Op.RESHAPE: OpSpec(methods=("view", "reshape"),
                       exported=("view.default", "reshape.default", "_unsafe_view.default",
                                 "unsqueeze.default", "squeeze.dim", "squeeze.dims",
                                 "unflatten.int")),
    Op.PERMUTE: OpSpec(exported=("permute.default",)),
    Op.TRANSPOSE: OpSpec(exported=("transpose.int",)),
    Op.MEAN_MAX: OpSpec(functions=(torch.mean,), methods=("mean", "amax"),
                        exported=("mean.dim", "amax.default", "amin.default")),
    Op.SUM: OpSpec(exported=("sum.dim_IntList",)),
    Op.ADDMM: OpSpec(exported=("addmm.default",)),
    Op.MATMUL: OpSpec(exported=("matmul.default", "bmm.default", "mm.default")),
    Op.ATTENTION: OpSpec(exported=("scaled_dot_product_attention.default",)),
    Op.SOFTMAX: OpSpec(exported=("softmax.int", "_softmax.default", "_safe_softmax.default")),
    Op.SELECT: OpSpec(exported=("select.int", "slice.Tensor")),
    Op.EXPAND: OpSpec(exported=("expand.default",)),
    Op.MASKED: OpSpec(exported=("masked_fill.Scalar", "masked_fill.Tensor")),
    Op.SIZE: OpSpec(methods=("size",)),
    Op.NDIM: OpSpec(methods=("dim",)),
}


def _exported_targets(spec) -> list:
    """The call_function targets an `exported` entry stands for (none if this torch lacks it)."""
    if not isinstance(spec, str):
        return [spec]
    name, _, overload = spec.partition(".")
    packet = getattr(torch.ops.aten, name, None)
    if packet is None:
        return []
    overloads = [overload] if overload else packet.overloads()
    return [getattr(packet, o) for o in overloads if hasattr(packet, o)]


def _index(level: str) -> dict:
    """{member: category} of one level; ValueError if a member is in two categories."""
    index: dict = {}
    for op, spec in OPS.items():
        members = getattr(spec, level)
        if level == "exported":
            members = [t for entry in members for t in _exported_targets(entry)]
        for member in members:
            if index.setdefault(member, op) is not op:
                raise ValueError(f"{member!r} is in categories {index[member].name} and {op.name}")
    return index


_FUNCTIONS, _METHODS, _EXPORTED = _index("functions"), _index("methods"), _index("exported")
_index("modules")  # the check only: modules are matched with isinstance


@functools.cache
def module_op(cls: type) -> Op | None:
    """The category of a module type: the first in `OPS` order it is a subclass of a member of."""
    return next((op for op, spec in OPS.items() if spec.modules and issubclass(cls, spec.modules)),
                None)


def fx_op(node: fx.Node, root: nn.Module) -> Op | None:
    """The category of a torch.fx node (`root`: the module its call_module targets live in)."""
    if node.op == "call_module":
        return module_op(type(root.get_submodule(node.target)))
    if node.op == "call_function":
        return _FUNCTIONS.get(node.target)
    if node.op == "call_method":
        return _METHODS.get(node.target)
    return None


def exported_op(target) -> Op | None:
    """The category of a call_function target of a `torch.export` graph (an aten overload)."""
    return _EXPORTED.get(target)
