"""`diagnose(model)`: per layer, what decides the damage of one-shot compression — read it before
choosing a ratio.

For every Conv2d / Linear weight W (the tensors `prune` acts on), with c filters (rows of the
matrix view W.reshape(c, −1)) of L2 norms ‖w_i‖:

* unstructured: the global magnitude threshold t_g at `sparsity` (one value over all layers, the
  paper's protocol), the share of this layer's entries with |w| ≤ t_g (what global pruning removes
  here; per-layer pruning removes `sparsity` everywhere) and this layer's own threshold t_ℓ;
* filters: the spread min ‖w_i‖ / max ‖w_i‖; the *shrunken* filters, ‖w_i‖ < `shrunken` · max ‖w_i‖;
  for a conv whose output feeds a BatchNorm directly, the shrunken filters BN keeps *alive*,
  |γ_i| ≥ `alive` · max |γ| — BN divides by the channel's running std and multiplies by γ, so such a
  filter still carries signal though magnitude pruning deletes it first — and the alive channels
  (|γ_i| ≥ `alive` · max |γ|) among the filters L1 removal at `filters` deletes;
* low rank: σ_r/σ_1 and the energy kept Σ_{i≤r} σ_i² / Σ σ_i² at the rank `factorize(rank=rank)`
  keeps, r = max(1, ⌊rank · min(c, n/c)⌋) (for conv weights; Linear layers too, for reference).

The BN after each conv is found by tracing with torch.fx; a model that does not trace gets no BN
columns. Needs torch.nn only.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields

import torch
from torch import fx, nn

from ..graph.arguments import check_module
from .filters import filter_keep_mask
from .prune import prunable_tensors


@dataclass
class LayerDiagnosis:
    """One Conv2d/Linear weight; BN fields are None where no BatchNorm follows the layer."""
    name: str
    shape: tuple[int, ...]
    pruned_share_global: float       # share of entries with |w| ≤ the global threshold
    threshold_layer: float           # this layer's magnitude threshold at `sparsity`
    filters: int
    filter_norm_spread: float        # min ‖w_i‖ / max ‖w_i‖
    shrunken: int                    # filters with ‖w_i‖ < shrunken · max ‖w_i‖
    shrunken_alive: int | None       # ... whose BN channel is alive (|γ_i| ≥ alive · max |γ|)
    alive_removed: int | None        # alive BN channels among the filters L1 removal deletes
    removed: int                     # filters L1 removal deletes at `filters`
    rank: int                        # rank factorize keeps
    sigma_ratio: float               # σ_r / σ_1
    energy_kept: float               # Σ_{i≤r} σ_i² / Σ σ_i²


@dataclass
class Diagnosis:
    """The per-layer rows and the settings they were computed at; str() is a markdown table."""
    layers: list[LayerDiagnosis]
    threshold_global: float
    sparsity: float
    filters: float
    rank: float

    def __str__(self) -> str:
        heads = ["layer", "shape", f"pruned at {self.sparsity:g} global", f"layer threshold (global {self.threshold_global:.3g})",
                 "filter norm min/max", "shrunken filters", "of them BN-alive",
                 f"alive removed at {self.filters:g} filters", f"σ_r/σ_1 at rank {self.rank:g}", "energy kept"]
        rows = ["| " + " | ".join(heads) + " |", "|" + "---|" * len(heads)]
        dash = lambda v: "—" if v is None else str(v)  # noqa: E731
        for d in self.layers:
            rows.append(f"| {d.name} | {'×'.join(map(str, d.shape))} | {d.pruned_share_global:.2f} | "
                        f"{d.threshold_layer:.3g} | {d.filter_norm_spread:.3f} | {d.shrunken}/{d.filters} | "
                        f"{dash(d.shrunken_alive)} | {dash(d.alive_removed)}/{d.removed} | {d.sigma_ratio:.3f} | "
                        f"{d.energy_kept:.3f} |")
        return "\n".join(rows)

    def as_dicts(self) -> list[dict]:
        return [{f.name: getattr(d, f.name) for f in fields(d)} for d in self.layers]


def _fraction(name: str, value, closed_low: bool = True) -> float:
    ok = (isinstance(value, (int, float)) and not isinstance(value, bool)
          and (0 <= value if closed_low else 0 < value) and value <= 1)
    if not ok:
        raise ValueError(f"{name} must be a float in {'[' if closed_low else '('}0, 1], got {name}={value!r}")
    return float(value)


def batchnorm_after(model: nn.Module) -> dict[str, nn.modules.batchnorm._BatchNorm]:
    """{conv module name: the BatchNorm module applied directly to its output}, by an fx trace
    ({} if the model does not trace)."""
    try:
        graph = fx.symbolic_trace(model).graph
    except Exception:       # noqa: BLE001 — any tracing failure means: no BN pairing
        return {}
    modules = dict(model.named_modules())
    pairs = {}
    for node in graph.nodes:
        if node.op == "call_module" and isinstance(modules.get(node.target), nn.modules.batchnorm._BatchNorm):
            source = node.args[0]
            if isinstance(source, fx.Node) and source.op == "call_module" \
                    and isinstance(modules.get(source.target), nn.Conv2d):
                pairs[source.target] = modules[node.target]
    return pairs


def diagnose(model: nn.Module, sparsity: float = 0.9, filters: float = 0.5, rank: float = 0.5,
             shrunken: float = 0.1, alive: float = 0.1) -> Diagnosis:
    """Per Conv2d/Linear layer of `model`: global vs per-layer pruning thresholds at `sparsity`,
    filter-norm spread, shrunken filters and those BN keeps alive, alive channels lost at
    `filters` removed, and the spectrum at rank fraction `rank` (module docstring).
    `print(diagnose(model))` prints the table; the model is not changed."""
    check_module(model)
    sparsity, filters = _fraction("sparsity", sparsity), _fraction("filters", filters)
    rank = _fraction("rank", rank, closed_low=False)
    shrunken, alive = _fraction("shrunken", shrunken), _fraction("alive", alive)
    tensors = {n: t.detach().double() for n, t in prunable_tensors(model).items()
               if isinstance(model.get_submodule(n.rpartition(".")[0]), (nn.Conv2d, nn.Linear))}
    if not tensors:
        raise ValueError(f"model {type(model).__name__} has no Conv2d or Linear weight to diagnose")
    flat = torch.cat([t.abs().flatten() for t in tensors.values()])
    threshold_global = _threshold(flat, sparsity)
    bns = batchnorm_after(model)
    rows = []
    for name, w in tensors.items():
        module_name = name.rpartition(".")[0]
        matrix = w.reshape(w.shape[0], -1)
        norms = matrix.norm(dim=1)
        small = norms < shrunken * norms.max()
        removed = ~filter_keep_mask(w, filters) if isinstance(model.get_submodule(module_name), nn.Conv2d) \
            else torch.zeros(w.shape[0], dtype=torch.bool)
        bn = bns.get(module_name)
        if bn is not None and bn.weight is not None:
            gamma = bn.weight.detach().abs().double()
            is_alive = gamma >= alive * gamma.max()
            small_alive, alive_removed = int((small & is_alive).sum()), int((removed & is_alive).sum())
        else:
            small_alive = alive_removed = None
        sigma = torch.linalg.svdvals(matrix)
        r = max(1, math.floor(round(rank * sigma.numel(), 9)))
        power = sigma ** 2
        total = float(power.sum())
        rows.append(LayerDiagnosis(
            name=name, shape=tuple(w.shape),
            pruned_share_global=float((w.abs() <= threshold_global).double().mean()) if sparsity > 0 else 0.0,
            threshold_layer=_threshold(w.abs().flatten(), sparsity),
            filters=w.shape[0], filter_norm_spread=float(norms.min() / norms.max()) if norms.max() > 0 else 0.0,
            shrunken=int(small.sum()), shrunken_alive=small_alive, alive_removed=alive_removed,
            removed=int(removed.sum()), rank=r,
            sigma_ratio=float(sigma[r - 1] / sigma[0]) if sigma[0] > 0 else 0.0,
            energy_kept=float(power[:r].sum()) / total if total > 0 else 0.0))
    return Diagnosis(rows, threshold_global, sparsity, filters, rank)


def _threshold(magnitudes: torch.Tensor, sparsity: float) -> float:
    """The largest of the round(sparsity · N) smallest magnitudes (what pruning zeroes), 0 if none."""
    n = round(sparsity * magnitudes.numel())
    return float(torch.kthvalue(magnitudes, n).values) if n > 0 else 0.0
