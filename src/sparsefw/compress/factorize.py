"""Low-rank factorization of Conv2d and Linear layers by truncated SVD.

A conv weight W (c_out, c_in/g, kh, kw) with g groups is g matrices W_j of m × n,
m = c_out/g, n = c_in/g·kh·kw. With W_j = U_j Σ_j V_jᵀ, the rank-r replacement is
    a kh×kw conv with g·r filters, weights Σ_r V_rᵀ (stride, padding, dilation, padding mode and
    groups kept, no bias), followed by a 1×1 conv with weights U_r (groups g, the original bias);
a Linear (g = 1) becomes Linear(n → r, no bias) then Linear(r → m, bias).
Weights: g·r·(m + n) instead of g·m·n, so a layer saves only if r·(m + n) < m·n (break-even);
FLOPs scale the same way (both factors run at the output resolution). Depthwise convs (m = 1)
never save and are always skipped.

Rank rules (exactly one):
* rank: float f in (0, 1] → r = max(1, ⌊f·rank_max⌋) (the paper's rule; the product is rounded to
  1e-9 first so that 0.29·100 gives 29), int → min(rank, rank_max).
* energy: the smallest r whose leading singular values keep that fraction of Σσ² (σ² summed over
  groups).
* budget: the compressed model may use at most budget × the original parameters (budget_kind
  "params") or FLOPs ("flops", counted by torch.utils.flop_counter on example_inputs). Every layer
  gets rank 1; the remaining singular values are taken greedily, largest first by
  (σ_i² / ‖W‖_F²) / (cost of one rank of that layer) — normalised energy per parameter (or FLOP) —
  while they fit. Layers whose rank ends above break-even stay dense, which costs less than
  allotted, so the budget is an upper bound.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
from torch import nn

from ._util import as_input_tuple, check_module, set_submodule

_BUDGET_KINDS = ("params", "flops")
_LAYER_TYPES = {"all": (nn.Conv2d, nn.Linear), "conv": (nn.Conv2d,), "linear": (nn.Linear,)}


@dataclass
class _Layer:
    name: str
    module: nn.Module
    groups: int
    m: int          # rows per group (output channels / features per group)
    n: int          # columns per group (c_in/g·kh·kw, or in_features)
    sigma: torch.Tensor  # (groups, rank_max) singular values, descending

    @property
    def rank_max(self) -> int:
        return min(self.m, self.n)

    def saves(self, r: int) -> bool:
        return r * (self.m + self.n) < self.m * self.n


def factorizable_layers(model: nn.Module, layers: str = "all") -> dict[str, nn.Module]:
    """The Conv2d and Linear modules of `model` by name (`layers`: "all", "conv" or "linear")."""
    if layers not in _LAYER_TYPES:
        raise ValueError(f"layers must be one of {tuple(_LAYER_TYPES)}, got layers={layers!r}")
    types = _LAYER_TYPES[layers]
    return {name: m for name, m in model.named_modules() if isinstance(m, types)}


def factorize(model: nn.Module, rank: float | int | None = None, energy: float | None = None,
              budget: float | None = None, budget_kind: str = "params", example_inputs=None,
              skip_no_saving: bool = True, layers: str = "all", return_recipe: bool = False):
    """Replace Conv2d and Linear layers by truncated-SVD factor pairs (see the module docstring).

    Args:
        model: left untouched.
        rank / energy / budget: the rank rule; give exactly one.
        budget_kind: "params" or "flops" (needs example_inputs).
        skip_no_saving: keep layers dense where the factor pair would not be smaller; False
            factorizes every layer (at full rank this reproduces the original function).
        layers: which layers to factorize: "all" (Conv2d and Linear), "conv" (Conv2d only, as in
            the paper's code) or "linear"; the others stay as they are.
        return_recipe: also return {"kind": "factorize", "ranks": {layer: r},
            "skipped": {layer: reason}} (JSON-able, usable by `rebuild`).

    Returns:
        A copy of `model` with the layers replaced by `nn.Sequential(first, second)`; with
        `return_recipe` the pair (model, recipe).
    """
    check_module(model)
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
    if budget is not None and budget_kind == "flops" and example_inputs is None:
        raise ValueError("example_inputs is required for budget_kind='flops', got None")

    result = copy.deepcopy(model)
    layers = [_describe(name, module) for name, module in factorizable_layers(result, layers).items()]
    if budget is not None:
        ranks = _budget_ranks(model, layers, budget, budget_kind, example_inputs)
    else:
        ranks = {layer.name: _layer_rank(layer, rank, energy) for layer in layers}
    chosen, skipped = {}, {}
    for layer in layers:
        r = ranks[layer.name]
        if skip_no_saving and not layer.saves(r):
            skipped[layer.name] = (f"rank {r} does not save: needs r < "
                                   f"{layer.m * layer.n / (layer.m + layer.n):.2f}")
            continue
        set_submodule(result, layer.name, _factor_pair(layer.module, r))
        chosen[layer.name] = r
    if not return_recipe:
        return result
    return result, {"kind": "factorize", "ranks": chosen, "skipped": skipped}


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
    sigma = torch.linalg.svdvals(matrices.to(torch.float64))
    return _Layer(name, module, groups, matrices.shape[1], matrices.shape[2], sigma)


def _group_matrices(module: nn.Module) -> torch.Tensor:
    """(groups, m, n) matrix view of a Conv2d or Linear weight."""
    w = module.weight.detach()
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


def _budget_ranks(model, layers, budget, budget_kind, example_inputs) -> dict[str, int]:
    """Greedy global allocation of singular values under a parameter/FLOP budget."""
    if budget_kind == "params":
        total = sum(p.numel() for p in model.parameters())
        positions = {layer.name: 1 for layer in layers}
    else:
        from .metrics import count_flops
        inputs = as_input_tuple(example_inputs, "example_inputs")
        total = count_flops(model, inputs)
        positions = _output_positions(model, inputs)
    scale = 2 if budget_kind == "flops" else 1  # a multiply-add is 2 FLOPs
    unit = torch.tensor([scale * layer.groups * (layer.m + layer.n) * positions[layer.name]
                         for layer in layers], dtype=torch.float64)
    dense = sum(scale * layer.groups * layer.m * layer.n * positions[layer.name] for layer in layers)
    available = budget * total - (total - dense) - float(unit.sum())
    if available < 0:
        least = ((total - dense) + float(unit.sum())) / total
        raise ValueError(f"budget={budget} is below the smallest reachable {budget_kind} fraction "
                         f"{least:.4f} (every factorized layer at rank 1)")
    scores, owners, costs = [], [], []
    for index, layer in enumerate(layers):
        power = (layer.sigma ** 2).sum(0)
        rest = power[1:] / power.sum().clamp_min(torch.finfo(power.dtype).tiny) / unit[index]
        scores.append(rest)
        owners.append(torch.full_like(rest, index, dtype=torch.long))
        costs.append(torch.full_like(rest, float(unit[index])))
    scores, owners, costs = torch.cat(scores), torch.cat(owners), torch.cat(costs)
    order = torch.argsort(scores, descending=True, stable=True)
    taken = order[costs[order].cumsum(0) <= available]
    extra = torch.bincount(owners[taken], minlength=len(layers))
    return {layer.name: 1 + int(extra[i]) for i, layer in enumerate(layers)}


def _output_positions(model: nn.Module, inputs: tuple) -> dict[str, int]:
    """Output positions (batch × H_out·W_out for convs, batch × leading dims for Linears) of
    every factorizable layer on `inputs`."""
    positions, handles = {}, []
    for name, module in factorizable_layers(model).items():
        def hook(mod, args, out, name=name):
            channels = out.shape[1] if isinstance(mod, nn.Conv2d) else out.shape[-1]
            positions[name] = out.numel() // channels
        handles.append(module.register_forward_hook(hook))
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(*inputs)
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return positions


def _factor_pair(module: nn.Module, r: int) -> nn.Sequential:
    """nn.Sequential(first, second) computing the rank-r truncated SVD of `module`."""
    weight = module.weight.detach()
    matrices = _group_matrices(module)
    u, s, vh = torch.linalg.svd(matrices.to(torch.float64), full_matrices=False)
    first_w = (s[:, :r, None] * vh[:, :r]).to(weight.dtype)     # (g, r, n)
    second_w = u[:, :, :r].to(weight.dtype)                     # (g, m, r)
    kwargs = {"device": weight.device, "dtype": weight.dtype}
    has_bias = module.bias is not None
    if isinstance(module, nn.Linear):
        first = nn.Linear(module.in_features, r, bias=False, **kwargs)
        second = nn.Linear(r, module.out_features, bias=has_bias, **kwargs)
        first.weight.data.copy_(first_w[0])
        second.weight.data.copy_(second_w[0])
    else:
        g = module.groups
        first = nn.Conv2d(module.in_channels, g * r, module.kernel_size, module.stride,
                          module.padding, module.dilation, groups=g, bias=False,
                          padding_mode=module.padding_mode, **kwargs)
        second = nn.Conv2d(g * r, module.out_channels, 1, groups=g, bias=has_bias, **kwargs)
        first.weight.data.copy_(first_w.reshape(first.weight.shape))
        second.weight.data.copy_(second_w.reshape(second.weight.shape))
    if has_bias:
        second.bias.data.copy_(module.bias.detach())
    pair = nn.Sequential(first, second)
    pair.train(module.training)
    return pair
