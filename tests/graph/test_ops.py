"""The op registry (`sparsefw.graph.ops`): one category per op, the same at both graph levels.

Independent truth: torch.fx and torch.export themselves. A module or function of a category,
traced with torch.fx, must be found in that category (what the per-layer pass reads), and every
op torch.export lowers it to must be in the same category (what the dependency analysis reads).
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import fx, nn

from sparsefw.graph import ops
from sparsefw.graph.capture import export_graph
from sparsefw.graph.ops import OPS, Op, OpSpec, exported_op, fx_op


class Call(nn.Module):
    def __init__(self, f):
        super().__init__()
        self.f = f

    def forward(self, x):
        return self.f(x)


CASES = [  # (category, a module or a function of x)
    (Op.ELEMENTWISE, nn.GELU()), (Op.ELEMENTWISE, nn.SELU()), (Op.ELEMENTWISE, F.relu),
    (Op.ELEMENTWISE, torch.exp), (Op.ELEMENTWISE, lambda x: x.clamp(min=0.0)),
    (Op.ELEMENTWISE, lambda x: x.sigmoid()),
    (Op.DROPOUT, F.dropout), (Op.DROPOUT, F.alpha_dropout),
    (Op.POOL, nn.MaxPool2d(2)), (Op.POOL, nn.AdaptiveAvgPool2d(1)), (Op.AVG_POOL, nn.AvgPool2d(2)),
    (Op.BINARY, lambda x: x + x), (Op.BINARY, lambda x: x.mul(x)), (Op.BINARY, lambda x: torch.div(x, x)),
    (Op.CONCAT, lambda x: torch.cat([x, x], 1)),
    (Op.FLATTEN, nn.Flatten()), (Op.FLATTEN, lambda x: x.flatten(1)), (Op.FLATTEN, torch.flatten),
    (Op.RESHAPE, lambda x: x.view(2, -1)), (Op.RESHAPE, lambda x: x.reshape(2, -1)),
    (Op.MEAN_MAX, lambda x: x.mean((2, 3))), (Op.MEAN_MAX, lambda x: x.amax((2, 3))),
    (Op.MEAN_MAX, lambda x: torch.mean(x, 1)),
    (Op.CONV, nn.Conv2d(4, 4, 3)), (Op.CONV, nn.Conv1d(4, 4, 3)),
    (Op.CONV_TRANSPOSE, nn.ConvTranspose2d(4, 4, 3)), (Op.LINEAR, nn.Linear(6, 3)),
    (Op.BATCH_NORM, nn.BatchNorm2d(4)), (Op.LAYER_NORM, nn.LayerNorm(6)),
    (Op.GROUP_NORM, nn.GroupNorm(2, 4)),
]


def _input(module) -> torch.Tensor:
    return torch.randn(2, 4, 6) if isinstance(module, nn.Conv1d) else torch.randn(2, 4, 6, 6)


@pytest.mark.parametrize("category, f", CASES)
def test_both_levels_put_an_op_in_one_category(category, f):
    model = Call(f).eval()   # a module is a submodule: a call_module node of the trace
    x = _input(f)
    gm = fx.symbolic_trace(model)
    calls = [n for n in gm.graph.nodes if n.op.startswith("call_")]
    assert calls and {fx_op(n, gm) for n in calls} == {category}
    exported = [n.target for n in export_graph(model, (x,)).graph.nodes if n.op == "call_function"]
    assert exported and {exported_op(t) for t in exported} == {category}, exported


def test_every_exported_name_is_an_op_of_this_torch():
    missing = [entry for spec in OPS.values() for entry in spec.exported
               if not ops._exported_targets(entry)]
    assert not missing


def test_modules_match_subclasses_and_the_first_category_wins():
    class MyConv(nn.Conv2d):
        pass
    assert ops.module_op(MyConv) is Op.CONV
    assert ops.module_op(nn.PReLU) is Op.PRELU and ops.module_op(nn.Embedding) is None


def test_an_op_in_two_categories_is_refused(monkeypatch):
    monkeypatch.setitem(OPS, Op.SUM, OpSpec(methods=("mean",)))
    with pytest.raises(ValueError, match="'mean' is in categories MEAN_MAX and SUM"):
        ops._index("methods")
