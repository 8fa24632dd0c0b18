"""Which parameters a normalisation layer makes scale-invariant.

A weight W is *scale-invariant* when the model computes the same function (in training mode) for
c·W, every c > 0. That holds where the layer reading W feeds a normalisation only, possibly through
positively homogeneous ops (h(c·x) = c·h(x): ReLU, max/avg pooling, dropout):

* BatchNorm: BN(c·z + b) = BN(z) per channel (train mode subtracts each channel's batch mean and
  divides by its standard deviation), so the layer's own bias does not matter either — when BN reads
  the layer directly; through other ops the layer must have no bias;
* LayerNorm / GroupNorm: LN(c·z) = LN(z) (up to ε) for a layer without a bias (a per-feature bias is
  not removed by their statistics).

For such a W only its direction matters: Frank-Wolfe steps θ ← (1 − η)θ + η·v change it by an angle
of order η whatever the radius, and the weight the vertices do not renew decays by (1 − η) per step.
Elsewhere the scale of W is the layer's gain, which a fixed step would set by the coherence of the
recent vertices rather than by the loss (the choice of `sparsefw.constrain`'s step rule).

The analysis reads the `torch.export` graph of `capture.export_graph`; a weight used more than once
(tied) is never reported.
"""
from __future__ import annotations

import torch
from torch import fx, nn

from .arguments import as_input_tuple, check_module
from .capture import export_graph
from .ops import Op, exported_op

_LAYERS = (Op.CONV, Op.LINEAR)
_OTHER_NORMS = (Op.LAYER_NORM, Op.GROUP_NORM)
#: categories whose ops are positively homogeneous, h(c·x) = c·h(x) for c > 0 (max/average pools,
#: copies; item 0 of a pool with indices), followed from a layer to its normalisation
_HOMOGENEOUS = (Op.COPY, Op.POOL, Op.POOL_WITH_INDICES, Op.AVG_POOL)
#: the homogeneous members of categories that also hold other ops (ELEMENTWISE, DROPOUT)
_HOMOGENEOUS_ATEN = {overload for name in ("relu", "relu_", "dropout", "dropout_", "feature_dropout")
                     for overload in (getattr(getattr(torch.ops.aten, name), o)
                                      for o in getattr(torch.ops.aten, name).overloads())}


def _passes_scale(node: fx.Node) -> bool:
    """A positively homogeneous op, or the values (item 0) of a pool with indices."""
    op = exported_op(node.target)
    if op is Op.GETITEM:
        return node.args[1] == 0 and exported_op(node.args[0].target) is Op.POOL_WITH_INDICES
    return op in _HOMOGENEOUS or node.target in _HOMOGENEOUS_ATEN


def _only_reaches(node: fx.Node, is_end, through: bool) -> bool:
    """True when every path from `node`'s output reaches a node with `is_end(node)` as its input
    (argument 0 only), through positively homogeneous ops where `through` allows them."""
    if not node.users:
        return False
    for user in node.users:
        if user.op != "call_function":
            return False
        if is_end(user):
            if user.args[0] is not node or any(a is node for a in user.args[1:]):
                return False
        elif not (through and _passes_scale(user) and _only_reaches(user, is_end, through)):
            return False
    return True


def _normalised(node: fx.Node, has_bias: bool) -> bool:
    """Every path from the layer `node` reaches a normalisation that removes its scale: a BatchNorm
    reading it directly, else (no bias: h(c·z + b) ≠ c·h(z + b/c)) through homogeneous ops a
    BatchNorm, LayerNorm or GroupNorm."""
    def removes_scale(user: fx.Node) -> bool:
        op = exported_op(user.target)
        return op is Op.BATCH_NORM or (op in _OTHER_NORMS and not has_bias)
    return _only_reaches(node, removes_scale, through=not has_bias)


def scale_invariant_parameters(model: nn.Module, example_inputs) -> frozenset[str]:
    """Qualified names of the parameters of `model` whose scale the function ignores, from a
    `torch.export` capture on `example_inputs` (a tensor or a tuple of tensors):

    * conv/Linear weights whose output a normalisation removes the scale of (module docstring);
    * the affine γ and β of a normalisation whose output only such layers read (through positively
      homogeneous ops): scaling (γ, β) by c scales what those layers read by c, which their own
      normalisation removes — BN → ReLU → conv → BN, but not a BN whose output joins a residual
      add or reaches a classifier.
    """
    check_module(model)
    captured = export_graph(model, as_input_tuple(example_inputs, "example_inputs"))
    uses: dict[str, int] = {}
    for node, name in captured.state_names.items():
        uses[name] = uses.get(name, 0) + len(node.users)
    once = {name for name in captured.parameters if uses.get(name) == 1 and name not in captured.aliases}
    layers = {}
    for node in captured.graph.nodes:
        if node.op == "call_function" and exported_op(node.target) in _LAYERS:
            weight = captured.state_names.get(node.args[1])
            bias = node.args[2] if len(node.args) > 2 else node.kwargs.get("bias")
            if weight in once and _normalised(node, bias is not None):
                layers[node] = weight
    found = set(layers.values())
    for node in captured.graph.nodes:
        op = exported_op(node.target) if node.op == "call_function" else None
        if op is Op.BATCH_NORM or op in _OTHER_NORMS:
            first = 1 if op is Op.BATCH_NORM else 2  # (x, γ, β, …) or (x, shape|groups, γ, β)
            affine = [captured.state_names.get(a) for a in node.args[first:first + 2] if isinstance(a, fx.Node)]
            if affine and all(name in once for name in affine) and _only_reaches(node, layers.__contains__, True):
                found.update(affine)
    return frozenset(found)
