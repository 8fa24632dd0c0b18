"""What a layer costs on the inputs it really sees: the measure `factorize` decides speed by.

A cost model is a callable `cost(modules, inputs) -> list[float]`: the cost of one call of each
module on the same `inputs` (a tuple of tensors), in any unit, comparable between the modules of one
call. `measured_latency` is the default one: median milliseconds of interleaved eval calls
(`metrics.measure_latency`, so drifting machine load hits the candidates alike). A deterministic
model (tests, a calibrated one for another machine) is any callable with that signature.

`layer_inputs` records the inputs every named layer receives during one eval forward pass of
`example_inputs`; a module called several times costs the sum over its calls.

The cost of a factor pair grows with its rank r; `RankCost` holds the line c(r) = a + b·r fitted by
least squares to the pair's costs at a few ranks, which is what a global latency budget allocates.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from .metrics import measure_latency

CostModel = Callable[[list[nn.Module], tuple], list[float]]


def measured_latency(warmup: int = 3, repeats: int = 20) -> CostModel:
    """The cost model "median wall-clock ms of one eval call", measured interleaved."""
    def cost(modules: list[nn.Module], inputs: tuple) -> list[float]:
        return measure_latency(modules, inputs, warmup=warmup, repeats=repeats)
    return cost


def layer_inputs(model: nn.Module, names: Sequence[str], inputs: tuple) -> dict[str, list[tuple]]:
    """{name: [the positional inputs of each call]} of the named submodules during one eval,
    no-grad forward pass of `model` on `inputs` (training flags restored afterwards)."""
    calls: dict[str, list[tuple]] = {name: [] for name in names}
    handles = [model.get_submodule(name).register_forward_pre_hook(
        lambda module, args, name=name: calls[name].append(tuple(a.detach() for a in args)))
        for name in names]
    flags = [(m, m.training) for m in model.modules()]
    try:
        model.eval()
        with torch.no_grad():
            model(*inputs)
    finally:
        for module, flag in flags:
            module.training = flag
        for handle in handles:
            handle.remove()
    return calls


def cost_on_calls(cost: CostModel, modules: list[nn.Module], calls: list[tuple]) -> list[float]:
    """Cost of each module summed over the recorded calls (all modules timed on the same inputs)."""
    totals = [0.0] * len(modules)
    with torch.no_grad():
        for inputs in calls:
            for i, value in enumerate(cost(modules, inputs)):
                totals[i] += float(value)
    return totals


@dataclass(frozen=True)
class RankCost:
    """One layer: its dense cost and the fitted cost line a + b·r of its rank-r factor pair."""

    dense: float
    intercept: float
    slope: float

    def at(self, r: int) -> float:
        return self.intercept + self.slope * r

    @classmethod
    def fit(cls, dense: float, ranks: Sequence[int], costs: Sequence[float]) -> "RankCost":
        """Least-squares line through (rank, cost); one rank gives a line through the origin."""
        r = torch.tensor(ranks, dtype=torch.float64)
        c = torch.tensor(costs, dtype=torch.float64)
        if len(set(ranks)) < 2:
            return cls(float(dense), 0.0, float(c.mean() / r.mean()))
        design = torch.stack([torch.ones_like(r), r], 1)
        a, b = torch.linalg.lstsq(design, c[:, None]).solution[:, 0].tolist()
        return cls(float(dense), a, b)
