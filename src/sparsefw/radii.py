"""Expected L2 norm of every parameter at its default initialisation, never touching the model.

The radius of a parameter's region is width · E‖θ^init‖₂ (docs/method.md#radius-and-k). Sources, in order:

* analytic, for PyTorch's default layers:
  - Linear, Conv1d/2d/3d, ConvTranspose1d/2d/3d: weight and bias ~ U(−b, b), b = 1/√fan_in
    (kaiming_uniform with a = √5 gives exactly this bound); `expected_norm_uniform`.
  - BatchNorm/InstanceNorm, LayerNorm, GroupNorm, RMSNorm: weight = 1 → √n; bias = 0.
  - Embedding: N(0, 1) → the chi mean √2·Γ((n+1)/2)/Γ(n/2) (0 on a padding row is ignored).
* Monte Carlo, for any other module with `reset_parameters`: the mean norm over `samples`
  re-initialisations of a CPU deep copy, seeded with `seed` inside `torch.random.fork_rng`, so
  neither the model nor the global random state changes.
* otherwise the parameter's current norm.

A tensor whose expected norm is 0 (zero-initialised, e.g. biases of norm layers) gets 1.0.
"""
from __future__ import annotations

import copy
import functools
import math

import torch
from torch import nn

from .optim.sharded import full_value

_UNIFORM_LAYERS = (nn.Linear, nn.Bilinear, nn.modules.conv._ConvNd)
_NORM_LAYERS = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm) + (
    (nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ())


def expected_norm_uniform(n: int, bound: float) -> float:
    r"""E‖x‖₂ for x ∈ Rⁿ with iid entries U(−bound, bound), to ~1e-12 relative.

    From √s = (1/(2√π))∫₀^∞ (1 − e^{−ts}) t^{−3/2} dt and E e^{−t x_i²} = φ(t) = √π·erf(√t)/(2√t)
    (bound 1):  E‖x‖₂ = (1/(2√π))∫₀^∞ (1 − φ(t)ⁿ) t^{−3/2} dt, integrated by the trapezoid rule in
    u = ln t (the integrand decays exponentially at both ends, so the rule converges geometrically).
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive int, got n={n!r}")
    if not (isinstance(bound, (int, float)) and math.isfinite(bound) and bound >= 0):
        raise ValueError(f"bound must be a finite number ≥ 0, got bound={bound!r}")
    return bound * _expected_norm_unit_uniform(n)


@functools.lru_cache(maxsize=1024)
def _expected_norm_unit_uniform(n: int) -> float:
    step = 0.1
    center = math.log(3.0 / n)  # E‖x‖² = n/3: the integrand changes near t ≈ 3/n
    u = torch.arange(center - 60.0, center + 90.0, step, dtype=torch.float64)
    t = torch.exp(u)
    # φ − 1 = Σ_{j≥1} (−t)^j / (j!(2j+1)) without cancellation for t < 1/2, erf form above
    j = torch.arange(1, 16, dtype=torch.float64)
    coefficients = (-1.0) ** j / (torch.exp(torch.lgamma(j + 1)) * (2 * j + 1))
    small = torch.minimum(t, torch.tensor(0.5, dtype=torch.float64))
    series = (small[:, None] ** j * coefficients).sum(1)
    root = torch.sqrt(t)
    log_phi = torch.where(t < 0.5, torch.log1p(series),
                          torch.log(torch.special.erf(root) * (math.sqrt(math.pi) / 2) / root))
    integrand = -torch.expm1(n * log_phi) * torch.exp(-u / 2)
    return float(integrand.sum() * step) / (2 * math.sqrt(math.pi))


def expected_norm_normal(n: int, std: float) -> float:
    """E‖x‖₂ for x ∈ Rⁿ with iid entries N(0, std²): std·√2·Γ((n+1)/2)/Γ(n/2)."""
    return std * math.sqrt(2.0) * math.exp(math.lgamma((n + 1) / 2) - math.lgamma(n / 2))


def _analytic(module: nn.Module, name: str, p: torch.Tensor) -> float | None:
    if isinstance(module, _UNIFORM_LAYERS) and name in ("weight", "bias"):
        fan_in, _ = nn.init._calculate_fan_in_and_fan_out(module.weight)
        return expected_norm_uniform(p.numel(), 1 / math.sqrt(fan_in)) if fan_in > 0 else 0.0
    if isinstance(module, _NORM_LAYERS) and name in ("weight", "bias"):
        return math.sqrt(p.numel()) if name == "weight" else 0.0
    if isinstance(module, nn.Embedding) and name == "weight":
        rows = module.num_embeddings - (module.padding_idx is not None)
        return expected_norm_normal(rows * module.embedding_dim, 1.0)
    return None


def _monte_carlo(module: nn.Module, samples: int, seed: int) -> dict[str, float]:
    """Mean norm of each direct parameter of `module` over `samples` resets of a CPU copy."""
    clone = copy.deepcopy(module).cpu()
    totals = dict.fromkeys((n for n, _ in clone.named_parameters(recurse=False)), 0.0)
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.default_generator.manual_seed(seed)
        for _ in range(samples):
            clone.reset_parameters()
            for n, p in clone.named_parameters(recurse=False):
                totals[n] += float(torch.linalg.vector_norm(p.double()))
    return {n: total / samples for n, total in totals.items()}


def expected_init_norms(model: nn.Module, samples: int = 100, seed: int = 0) -> dict[str, float]:
    """{qualified parameter name: E‖θ^init‖₂ (1.0 where that is 0)} for every parameter of `model`."""
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
        raise ValueError(f"samples must be a positive int, got samples={samples!r}")
    norms: dict[str, float] = {}
    sampled: dict[str, dict[str, float]] = {}
    for qualified, p in model.named_parameters():
        module_name, _, name = qualified.rpartition(".")
        module = model.get_submodule(module_name)
        norm = _analytic(module, name, p)
        if norm is None and callable(getattr(module, "reset_parameters", None)):
            if module_name not in sampled:
                sampled[module_name] = _monte_carlo(module, samples, seed)
            norm = sampled[module_name][name]
        if norm is None:
            with torch.no_grad():
                norm = float(torch.linalg.vector_norm(p.detach().double()))
        norms[qualified] = norm if norm > 0 else 1.0
    return norms


def moved_norm_parameters(model: nn.Module) -> list[str]:
    """Qualified names of the norm-layer scales γ ≠ 1 and shifts β ≠ 0 of `model` (BatchNorm,
    InstanceNorm, LayerNorm, GroupNorm, RMSNorm, and any class whose name ends in "Norm": the
    libraries' own). PyTorch and every library initialise them to exactly 1 and 0, so one that moved
    is the sign of trained weights (`constrain(..., radius_rule="auto")`); biases are no sign
    (PyTorch initialises them U(−b, b))."""
    moved = []
    for module_name, module in model.named_modules():
        if not (isinstance(module, _NORM_LAYERS) or type(module).__name__.endswith("Norm")):
            continue
        for name, p in module.named_parameters(recurse=False):
            start = 1.0 if name == "weight" else 0.0
            if name in ("weight", "bias") and not bool((full_value(p.detach()) == start).all()):
                moved.append(f"{module_name}.{name}" if module_name else name)
    return moved
