"""Low-rank factorization of Conv2d and Linear layers by truncated SVD, where it pays.

A conv weight W (c_out, c_in/g, kh, kw) with g groups is g matrices W_j of m × n,
m = c_out/g, n = c_in/g·kh·kw. With W_j = U_j Σ_j V_jᵀ, the rank-r replacement is
    a kh×kw conv with g·r filters, weights Σ_r V_rᵀ (stride, padding, dilation, padding mode and
    groups kept, no bias), followed by a 1×1 conv with weights U_r (groups g, the original bias);
a Linear (g = 1) becomes Linear(n → r, no bias) then Linear(r → m, bias). The pair is held by a
`FactorizedConv2d` / `FactorizedLinear` (`_modules`): still an nn.Conv2d / nn.Linear with the
layer's attributes, its `weight` the product of the factors, computed when read.
Weights: g·r·(m + n) instead of g·m·n, so a layer saves only if r·(m + n) < m·n (break-even);
FLOPs scale the same way (both factors run at the output resolution). Depthwise convs (m = 1)
never save and are always skipped; so is a layer whose weight or bias is tied to another name
(an output head sharing the token embedding): its pair would untie it and add the factors'
parameters to the tensor that stays.

Fewer FLOPs do not make a layer faster: two thin convs can run slower than one (per-op overhead,
kernels tuned for wide layers). With `cost="latency"` (the default when example_inputs are given)
a layer is factorized only if its factor pair also runs faster than the dense layer on the inputs
that layer receives in a forward pass of example_inputs (interleaved medians, layer_cost.py), by
at least LATENCY_MARGIN (5 %, below that the timings are noise); any cost model callable can stand
in for the measurement (taken as exact: cheaper is enough).

Rank rules (exactly one):
* rank: float f in (0, 1] → r = max(1, ⌊f·rank_max⌋) (the paper's rule; the product is rounded to
  1e-9 first so that 0.29·100 gives 29), int → min(rank, rank_max).
* energy: the smallest r whose leading singular values keep that fraction of Σσ² (σ² summed over
  groups).
* budget: the compressed model may cost at most budget × the original's parameters (budget_kind
  "params"), FLOPs ("flops", counted by torch.utils.flop_counter on example_inputs) or latency
  ("latency": the cost model on example_inputs, each layer's pair priced by the line a + b·r fitted
  to its cost at three ranks, the rest of the model at its measured cost). Every layer gets rank
  1; the remaining singular values are taken greedily, largest first by
  (σ_i² / ‖W‖_F²) / (cost of one more rank of that layer) while they fit. A layer pushed past the
  rank where it stops paying (break-even, or no longer faster under the cost model) stays dense
  where that costs less, else is held at that rank, and the allocation is repeated; the budget is
  an upper bound on the counted parameters and FLOPs, and on the *modelled* latency (the measured
  one follows it as closely as the per-layer timings add up; BENCHMARKS.md).
"""
from __future__ import annotations

import copy
import math
import sys
import warnings
from dataclasses import dataclass

import torch
from torch import nn
from tqdm import tqdm

from ..graph.arguments import as_input_tuple, check_module
from ..graph.capture import tensor_aliases
from ._modules import ComposedLayer, FactorizedConv1D, FactorizedConv2d, FactorizedLinear, is_conv1d
from ._util import listed, run_compressed, set_submodule
from .layer_cost import CostModel, RankCost, cost_on_calls, layer_inputs, measured_latency
from .metrics import unfused

_BUDGET_KINDS = ("params", "flops", "latency")
_COSTS = ("auto", "params", "latency")
# A timed pair must beat the dense layer by this share: per-layer differences below it are within
# the timing noise of a shared CPU and did not carry over to the whole model (BENCHMARKS.md,
# "Latency-aware factorization"). A cost-model callable is taken as exact (no margin).
LATENCY_MARGIN = 0.05
_LAYER_TYPES = {"all": (nn.Conv2d, nn.Linear), "conv": (nn.Conv2d,), "linear": (nn.Linear,)}
# Why a layer that could save is kept dense when a cost or FLOP count needs its calls
NOT_CALLED = ("its forward does not run on example_inputs (its weight is used directly, as "
              "nn.MultiheadAttention does with out_proj): a factor pair would not be what runs")


@dataclass
class _Layer:
    name: str
    module: nn.Module
    groups: int
    m: int          # rows per group (output channels / features per group)
    n: int          # columns per group (c_in/g·kh·kw, or in_features)
    svd: tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # float64 U, Σ, Vᵀ of the (g, m, n) view

    @property
    def sigma(self) -> torch.Tensor:
        """(groups, rank_max) singular values, descending."""
        return self.svd[1]

    def pair(self, r: int) -> FactorizedConv2d | FactorizedLinear:
        return _factor_pair(self.module, r, self.svd)

    @property
    def rank_max(self) -> int:
        return min(self.m, self.n)

    @property
    def break_even(self) -> float:
        """The rank at which the pair has as many weights as the layer: r = m·n / (m + n)."""
        return self.m * self.n / (self.m + self.n)

    @property
    def largest_saving_rank(self) -> int:
        """The largest r with r·(m + n) < m·n (0 if none)."""
        return min(math.ceil(self.break_even) - 1, self.rank_max)

    def saves(self, r: int) -> bool:
        return r * (self.m + self.n) < self.m * self.n


def factorizable_layers(model: nn.Module, layers: str = "all") -> dict[str, nn.Module]:
    """The Conv2d and Linear modules of `model` by name (`layers`: "all", "conv" or "linear"),
    not counting composed layers (already factorized or reduced: their stages are listed)."""
    if layers not in _LAYER_TYPES:
        raise ValueError(f"layers must be one of {tuple(_LAYER_TYPES)}, got layers={layers!r}")
    types = _LAYER_TYPES[layers]
    return {name: m for name, m in model.named_modules()
            if (isinstance(m, types) or (layers != "conv" and is_conv1d(m))) and not isinstance(m, ComposedLayer)}


def _check_rank_rule(rank, energy, budget, budget_kind: str, example_inputs, cost) -> None:
    """ValueError naming the first bad argument of `factorize`'s rank rule and cost."""
    given = [k for k, v in (("rank", rank), ("energy", energy), ("budget", budget)) if v is not None]
    if len(given) != 1:
        raise ValueError(f"give exactly one of rank, energy, budget; got {given or 'none'}")
    if rank is not None and not (
            (isinstance(rank, int) and not isinstance(rank, bool) and rank >= 1)
            or (isinstance(rank, float) and 0 < rank <= 1)):
        raise ValueError(f"rank must be a float in (0, 1] or an int >= 1, got {rank!r}")
    if energy is not None and not (isinstance(energy, (int, float)) and 0 < energy <= 1):
        raise ValueError(f"energy must be in (0, 1], got {energy!r}")
    if budget is not None and not (isinstance(budget, (int, float)) and 0 < budget <= 1):
        raise ValueError(f"budget must be in (0, 1], got {budget!r}")
    if budget_kind not in _BUDGET_KINDS:
        raise ValueError(f"budget_kind must be one of {_BUDGET_KINDS}, got {budget_kind!r}")
    if budget is not None and budget_kind != "params" and example_inputs is None:
        raise ValueError(f"example_inputs is required for budget_kind={budget_kind!r}, got None")
    if not (callable(cost) or cost in _COSTS):
        raise ValueError(f"cost must be one of {_COSTS} or a callable cost model, got cost={cost!r}")


def factorize(model: nn.Module, rank: float | int | None = None, energy: float | None = None,
              budget: float | None = None, budget_kind: str = "params", example_inputs=None,
              skip_no_saving: bool = True, layers: str = "conv", return_recipe: bool = False,
              cost: str | CostModel = "auto"):
    """Replace Conv2d (and on request Linear) layers by truncated-SVD factor pairs where they pay
    (see the module docstring).

    Args:
        model: left untouched.
        rank / energy / budget: the rank rule; give exactly one.
        budget_kind: "params", "flops" or "latency" (the last two need example_inputs).
        example_inputs: a tensor or tuple of tensors the model is called on; the per-layer costs
            are taken on the inputs each layer receives in that call (so batch size and image size
            matter: give the shape the model will serve).
        skip_no_saving: keep layers dense where the factor pair would not pay (see `cost`); False
            factorizes every selected layer (at full rank this reproduces the original function).
        layers: which layers to factorize: "conv" (Conv2d only, the layers the low-rank training
            mode constrains, as in the paper's code), "all" (Conv2d and Linear) or "linear"; the
            others stay as they are.
        return_recipe: also return {"kind": "factorize", "ranks": {layer: r},
            "skipped": {layer: reason}, "costs": {layer: {"dense": c, "factorized": c}}}
            (JSON-able, usable by `rebuild`; "costs" only under a cost model).
        cost: what a factor pair must beat the dense layer in. "params": weights only (the
            break-even rule, deterministic, needs no inputs). "latency": weights, and the median
            wall-clock time of interleaved calls on the layer's inputs from example_inputs, on
            their device, at least LATENCY_MARGIN (5 %) below the dense layer's. A callable cost(modules, inputs) -> list[float] (layer_cost.CostModel):
            weights, and that cost model. "auto": "latency" when example_inputs are given and
            layers may be skipped, else "params".

    Returns:
        A copy of `model` with the layers replaced by `FactorizedConv2d` / `FactorizedLinear`;
        with `return_recipe` the pair (model, recipe). Given example_inputs, the copy is run on them
        once (a ValueError names the module whose forward fails); a UserWarning says why when no
        layer was factorized.
    """
    check_module(model)
    _check_rank_rule(rank, energy, budget, budget_kind, example_inputs, cost)
    if cost == "auto":
        prices_latency = budget is not None and budget_kind == "latency"
        cost = "latency" if example_inputs is not None and (skip_no_saving or prices_latency) else "params"
    cost_model = measured_latency() if cost == "latency" else (cost if callable(cost) else None)
    if cost_model is not None and example_inputs is None:
        raise ValueError(f"cost={cost!r} is measured on example_inputs, got example_inputs=None")
    if budget is not None and budget_kind == "latency" and cost_model is None:
        raise ValueError("budget_kind='latency' prices layers by a cost model; got cost='params'")
    inputs = None if example_inputs is None else as_input_tuple(example_inputs, "example_inputs")

    result = copy.deepcopy(model)
    candidates = factorizable_layers(result, layers)
    tied = _tied_layers(result, candidates)
    selected = [_describe(name, module) for name, module in candidates.items() if name not in tied]
    can_save = [layer.name for layer in selected if layer.largest_saving_rank >= 1]
    calls = layer_inputs(model, can_save, inputs) if cost_model else {}
    unit = "ms" if cost == "latency" else "cost units"
    margin = LATENCY_MARGIN if cost == "latency" else 0.0
    if budget is not None:
        ranks, skipped, costs = _budget_ranks(model, selected, budget, budget_kind, inputs,
                                              cost_model, calls, skip_no_saving, unit, margin)
    else:
        ranks = {layer.name: _layer_rank(layer, rank, energy) for layer in selected}
        skipped, costs = ({}, {}) if not skip_no_saving else _skip_what_does_not_pay(
            selected, ranks, cost_model, calls, unit, margin)
    skipped.update(tied)
    chosen = {}
    for layer in selected:
        if layer.name not in skipped:
            set_submodule(result, layer.name, layer.pair(ranks[layer.name]))
            chosen[layer.name] = ranks[layer.name]
    if inputs is not None:
        run_compressed(result, inputs, "factorize", chosen)
    if not chosen:
        warnings.warn(_unchanged_reason(layers, skipped), stacklevel=2)
    if not return_recipe:
        return result
    recipe = {"kind": "factorize", "ranks": chosen, "skipped": skipped}
    if cost_model is not None:
        recipe["costs"] = costs
    return result, recipe


def _tied_layers(model: nn.Module, layers: dict[str, nn.Module]) -> dict[str, str]:
    """{layer: "tied to ..."} for the layers whose weight or bias is tied to a tensor of another
    name (an output head sharing the token embedding): a factor pair would untie them."""
    aliases = tensor_aliases(model)
    tied = {}
    for name in layers:
        others = [o for leaf in ("weight", "bias") for o in aliases.get(f"{name}.{leaf}", ())]
        if others:
            tied[name] = f"tied to {', '.join(others)}"
    return tied


def _unchanged_reason(layers: str, skipped: dict[str, str]) -> str:
    """Why `factorize` replaced no layer: none selected, or every selected one kept dense."""
    if not skipped:
        return (f"factorize(layers={layers!r}) changed nothing: the model has no "
                f"{' or '.join(t.__name__ for t in _LAYER_TYPES[layers])} layer to factorize")
    reasons = listed(f"{name}: {why}" for name, why in skipped.items())
    return (f"factorize changed nothing: all {len(skipped)} selected layer(s) were kept dense as "
            f"not paying ({reasons})")


def _skip_what_does_not_pay(layers, ranks, cost_model, calls, unit, margin):
    """({layer: reason} of the layers to keep dense, {layer: {"dense", "factorized"} costs}); a
    pair pays if it saves weights and costs less than (1 − margin) × the dense layer."""
    skipped, costs = {}, {}
    for layer in layers:
        r = ranks[layer.name]
        if not layer.saves(r):
            skipped[layer.name] = f"rank {r} does not save: needs r < {layer.break_even:.2f}"
    timed = [layer for layer in layers if cost_model is not None and layer.name not in skipped]
    skipped.update((layer.name, NOT_CALLED) for layer in timed if not calls[layer.name])
    timed = [layer for layer in timed if layer.name not in skipped]
    for layer in _progress(timed, "cost of factor pairs"):
        r = ranks[layer.name]
        dense, pair = cost_on_calls(cost_model, [layer.module, layer.pair(r)],
                                    calls[layer.name])
        costs[layer.name] = {"dense": dense, "factorized": pair}
        if not pair < (1 - margin) * dense:
            skipped[layer.name] = f"rank {r} is not faster: {pair:.4g} vs {dense:.4g} {unit} dense"
    return skipped, costs


def _progress(items, desc):
    return tqdm(items, desc=desc, leave=False, disable=not sys.stderr.isatty())


def rebuild_factorized(model: nn.Module, recipe: dict) -> nn.Module:
    """Recreate the architecture `factorize` produced (weights from this model's SVD)."""
    result = copy.deepcopy(model)
    layers = factorizable_layers(result)
    unknown = sorted(set(recipe["ranks"]) - set(layers))
    if unknown:
        raise ValueError(f"recipe names layers the model lacks: {unknown}")
    for name, r in recipe["ranks"].items():
        set_submodule(result, name, _factor_pair(layers[name], int(r)))
    return result


def _describe(name: str, module: nn.Module) -> _Layer:
    groups = module.groups if isinstance(module, nn.Conv2d) else 1
    matrices = _group_matrices(module)
    svd = torch.linalg.svd(matrices.to(torch.float64), full_matrices=False)
    return _Layer(name, module, groups, matrices.shape[1], matrices.shape[2], tuple(svd))


def _group_matrices(module: nn.Module) -> torch.Tensor:
    """(groups, m, n) matrix view of a Conv2d, Linear or Conv1D weight (the last stored (n, m))."""
    w = module.weight.detach()
    if is_conv1d(module):
        return w.t().unsqueeze(0)
    groups = module.groups if isinstance(module, nn.Conv2d) else 1
    return w.reshape(groups, w.shape[0] // groups, -1)


def _layer_rank(layer: _Layer, rank, energy) -> int:
    if rank is not None:
        if isinstance(rank, int):
            return min(rank, layer.rank_max)
        return max(1, math.floor(round(rank * layer.rank_max, 9)))
    power = (layer.sigma ** 2).sum(0)
    cumulative = power.cumsum(0) / power.sum().clamp_min(torch.finfo(power.dtype).tiny)
    return min(int((cumulative < energy - 1e-12).sum()) + 1, layer.rank_max)


def _budget_ranks(model, layers, budget, budget_kind, inputs, cost_model, calls, skip_no_saving,
                  unit, margin):
    """Greedy global allocation of singular values under a parameter/FLOP/latency budget:
    ({layer: rank}, {layer: reason} of those left dense, {layer: costs} under a cost model)."""
    fitted = _fit_rank_costs(layers, cost_model, calls) if cost_model is not None else {}
    if budget_kind == "latency":
        total = cost_model([model], inputs)[0]
        prices = fitted
    else:
        scale = 2 if budget_kind == "flops" else 1  # a multiply-add is 2 FLOPs
        if budget_kind == "params":
            total = sum(p.numel() for p in model.parameters())
            positions = {layer.name: 1 for layer in layers}
        else:
            from .metrics import count_flops
            total = count_flops(model, inputs)
            positions = _output_positions(model, inputs)
        prices = {layer.name: RankCost(scale * layer.groups * layer.m * layer.n * positions[layer.name],
                                       0.0, scale * layer.groups * (layer.m + layer.n) * positions[layer.name])
                  for layer in layers if layer.name in positions}
    # layers that can never save, or whose forward never runs, have no price: dense, in `fixed`
    skipped = {layer.name: NOT_CALLED if layer.largest_saving_rank >= 1
               else f"no rank saves: needs r < {layer.break_even:.2f}"
               for layer in layers if layer.name not in prices}
    priced = [layer for layer in layers if layer.name in prices]
    fixed = total - sum(prices[layer.name].dense for layer in priced)
    # the largest rank at which a layer still pays: smaller, and under a cost model also faster
    paying = {layer.name: layer.rank_max for layer in priced}
    if skip_no_saving:
        for layer in priced:
            fit = fitted.get(layer.name)
            paying[layer.name] = max([r for r in range(1, layer.largest_saving_rank + 1)
                                      if fit is None or fit.at(r) < (1 - margin) * fit.dense], default=0)
    dense = {name for name, r in paying.items() if r < 1}
    limit = {layer.name: layer.rank_max for layer in priced}
    while True:
        ranks = _greedy(priced, prices, limit, dense, budget * total - fixed,
                        lambda need: (f"budget={budget} is below the smallest reachable {budget_kind} "
                                      f"fraction {(fixed + need) / total:.4f} (every factorized layer "
                                      f"at rank 1)"))
        over = [name for name, r in ranks.items() if r > paying[name]]
        if not over:
            break
        for name in over:      # dense where that costs less under the budget, else held at `paying`
            if prices[name].dense <= prices[name].at(ranks[name]):
                dense.add(name)
            else:
                limit[name] = paying[name]
    for layer in priced:
        if layer.name not in dense:
            continue
        fit = fitted.get(layer.name)
        if layer.largest_saving_rank < 1:
            skipped[layer.name] = f"no rank saves: needs r < {layer.break_even:.2f}"
        elif paying[layer.name] < 1:
            skipped[layer.name] = (f"not faster at any rank: rank 1 costs {fit.at(1):.4g} vs "
                                   f"{fit.dense:.4g} {unit} dense (fitted)")
        else:
            skipped[layer.name] = (f"the budget gives it more than rank {paying[layer.name]}, "
                                   f"where it stops paying; dense costs less")
    costs = {name: {"dense": fit.dense, "factorized": fit.at(ranks.get(name, 1))}   # rank 1 if dense
             for name, fit in fitted.items()}
    return ranks, skipped, costs


def _fit_rank_costs(layers, cost_model, calls) -> dict[str, RankCost]:
    """Per layer that can save and is called: the cost line a + b·r fitted to its factor pair at
    ranks 1, half and all of its largest saving rank, beside the dense layer's cost (same calls)."""
    fitted = {}
    for layer in _progress([la for la in layers if la.largest_saving_rank >= 1 and calls[la.name]],
                           "cost of factor pairs"):
        top = layer.largest_saving_rank
        ranks = sorted({1, max(1, top // 2), top})
        pairs = [layer.pair(r) for r in ranks]
        dense, *costs = cost_on_calls(cost_model, [layer.module, *pairs], calls[layer.name])
        fit = RankCost.fit(dense, ranks, costs)
        fitted[layer.name] = RankCost(fit.dense, fit.intercept, max(fit.slope, 1e-9 * abs(dense)))
    return fitted


def _greedy(layers, prices, limit, dense, room, infeasible) -> dict[str, int]:
    """Rank 1 for every layer not kept `dense`, then singular values 2..limit, largest energy per
    cost first, while they fit in `room` (the budget less what the other layers cost); the
    ValueError infeasible(need) if even rank 1 everywhere does not fit."""
    active = [layer for layer in layers if layer.name not in dense]
    need = (sum(prices[name].dense for name in dense)
            + sum(prices[layer.name].at(1) for layer in active))
    available = room - need
    if available < 0:
        raise ValueError(infeasible(need))
    scores, owners, costs = [torch.zeros(0, dtype=torch.float64)], [torch.zeros(0, dtype=torch.long)], \
        [torch.zeros(0, dtype=torch.float64)]
    for index, layer in enumerate(active):
        power = (layer.sigma ** 2).sum(0)
        slope = prices[layer.name].slope
        rest = power[1:limit[layer.name]] / power.sum().clamp_min(torch.finfo(power.dtype).tiny) / slope
        scores.append(rest)
        owners.append(torch.full_like(rest, index, dtype=torch.long))
        costs.append(torch.full_like(rest, slope))
    scores, owners, costs = torch.cat(scores), torch.cat(owners), torch.cat(costs)
    order = torch.argsort(scores, descending=True, stable=True)
    taken = order[costs[order].cumsum(0) <= available]
    extra = torch.bincount(owners[taken], minlength=len(active))
    return {layer.name: 1 + int(extra[i]) for i, layer in enumerate(active)}


def _output_positions(model: nn.Module, inputs: tuple) -> dict[str, int]:
    """Output positions (batch × H_out·W_out for convs, batch × leading dims for Linears) of
    every factorizable layer whose forward runs on `inputs` (unfused, as FLOPs are counted)."""
    positions, handles = {}, []
    for name, module in factorizable_layers(model).items():
        def hook(mod, args, out, name=name):
            channels = out.shape[1] if isinstance(mod, nn.Conv2d) else out.shape[-1]
            positions[name] = out.numel() // channels
        handles.append(module.register_forward_hook(hook))
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad(), unfused():
            model(*inputs)
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return positions


def _factor_pair(module: nn.Module, r: int, svd=None) -> ComposedLayer:
    """The composed layer computing the rank-r truncated SVD of `module` (`svd`: the float64
    (U, Σ, Vᵀ) of its (g, m, n) view, computed if not given)."""
    weight = module.weight.detach()
    if svd is None:
        svd = torch.linalg.svd(_group_matrices(module).to(torch.float64), full_matrices=False)
    u, s, vh = svd
    first_w = (s[:, :r, None] * vh[:, :r]).to(weight.dtype)     # (g, r, n)
    second_w = u[:, :, :r].to(weight.dtype)                     # (g, m, r)
    kwargs = {"device": weight.device, "dtype": weight.dtype}
    has_bias = module.bias is not None
    conv1d = is_conv1d(module)
    if isinstance(module, nn.Linear) or conv1d:
        n, m = (weight.shape if conv1d else weight.shape[::-1])
        first = nn.Linear(n, r, bias=False, **kwargs)
        second = nn.Linear(r, m, bias=has_bias, **kwargs)
        kind = FactorizedConv1D if conv1d else FactorizedLinear
    else:
        g = module.groups
        first = nn.Conv2d(module.in_channels, g * r, module.kernel_size, module.stride,
                          module.padding, module.dilation, groups=g, bias=False,
                          padding_mode=module.padding_mode, **kwargs)
        second = nn.Conv2d(g * r, module.out_channels, 1, groups=g, bias=has_bias, **kwargs)
        kind = FactorizedConv2d
    with torch.no_grad():
        first.weight.copy_(first_w.reshape(first.weight.shape))
        second.weight.copy_(second_w.reshape(second.weight.shape))
        if has_bias:
            second.bias.copy_(module.bias.detach())
    first.train(module.training)
    return kind(first, second)
