"""How the radius rules of `constrain` fit transformers: the ratio ρ = ‖θ‖ / E‖θ_init‖ of every tensor
(E‖θ_init‖ = `radii.expected_init_norms`, PyTorch's default initialisation), and the slack of the
"init" rule's regions (gauge / radius, > 1 = scaled at set-up), on the transformer zoo
(tests/compress/transformer_zoo.py) in three states:

    library      fresh, the libraries' init (weights N(0, 0.02²), biases 0, norm γ = 1, β = 0)
    torch        fresh, PyTorch's defaults (every module's reset_parameters; other parameters as library)
    pretrained   library, then `pretrained_like` (weights ×U(3, 5), γ·exp(N(0, 0.3²)), biases + N(0, 1))

and the checkpoint detector of radius_rule="auto" (`radii.moved_norm_parameters`: some norm γ ≠ 1 or
β ≠ 0; biases are no sign, PyTorch initialises them nonzero).

Run:  python benchmarks/bench_transformer_radii.py      (seconds; prints a markdown table)
"""
from __future__ import annotations

import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "compress"))

import sparsefw  # noqa: E402
from sparsefw.assign import is_norm_scale_layer  # noqa: E402
from sparsefw.radii import expected_init_norms, moved_norm_parameters  # noqa: E402
from transformer_zoo import ZOO, build  # noqa: E402


def _state(name: str, state: str) -> torch.nn.Module:
    model, _ = build(name, pretrained=state == "pretrained")
    if state == "torch":
        torch.manual_seed(0)
        for module in model.modules():
            if hasattr(module, "reset_parameters") and not is_norm_scale_layer(module):
                module.reset_parameters()
    return model


def _kind(model: torch.nn.Module, name: str, p: torch.Tensor) -> str:
    module = model.get_submodule(name.rpartition(".")[0])
    if isinstance(module, torch.nn.Embedding):
        return "embedding"
    return "weight" if p.dim() >= 2 else "norm" if is_norm_scale_layer(module) else "bias"


def ratios(model: torch.nn.Module) -> dict[str, list[float]]:
    """ρ per tensor kind (zero tensors left out)."""
    norms, out = expected_init_norms(model), {}
    for name, p in model.named_parameters():
        current = float(p.detach().norm())
        if current > 0:
            out.setdefault(_kind(model, name, p), []).append(current / norms[name])
    return out


def worst_slack(model: torch.nn.Module, mode: str) -> tuple[float, str]:
    """max over single-tensor regions of gauge / radius under the "init" rule, on the weights before
    set-up scaled anything (> 1: that tensor is scaled), and which tensor."""
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    groups = sparsefw.constrain(model, mode, fixed_step="optimizer", radius_rule="init")
    return max((float(g["constraint"].norm(before[g["name"]])) / g["constraint"].radius, g["name"])
               for g in groups if not hasattr(g["constraint"], "pack"))


def main() -> None:
    print("| model | state | ρ weights (min–max) | ρ embeddings | worst gauge/radius k_support | l2 | checkpoint? |")
    print("|---|---|---|---|---|---|---|")
    for name in ZOO:
        for state in ("library", "torch", "pretrained"):
            r = ratios(_state(name, state))
            w, e = r.get("weight", []), r.get("embedding", [])
            span = lambda v: f"{min(v):.3g}–{max(v):.3g} (median {statistics.median(v):.3g})" if v else "–"  # noqa: E731
            slack = [f"{v:.3g} ({n})" for v, n in (worst_slack(_state(name, state), m) for m in ("k_support", "l2"))]
            print(f"| {name} | {state} | {span(w)} | {span(e)} | {slack[0]} | {slack[1]} | "
                  f"{bool(moved_norm_parameters(_state(name, state)))} |")


if __name__ == "__main__":
    import warnings
    warnings.simplefilter("ignore")
    main()
