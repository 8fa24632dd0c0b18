"""Convergence of gradient-rescaled SFW on a smooth non-convex problem: min_{t≤T} G(θ_t) against T.

    python benchmarks/bench_convergence.py    (the "convergence" section and results/convergence.png;
                                              --quick: horizons 10 and 40, prints only)

Problem, schedule and batches: as the section states (a tanh MLP on MNIST-5k, every tensor in a
k-support ball, α = c/√T per horizon T; the growing batch b = min(T, n) is Reddi et al. 2016's
condition for the O(1/√T) rate). The certificate is the full-batch Frank-Wolfe gap of the product
region, in closed form from the k-support LMO's value:

    G(θ) = max_{v∈C} ⟨∇F(θ), θ − v⟩ = Σ_ℓ ⟨∇_ℓF, θ_ℓ⟩ + τ_ℓ·‖top-k_ℓ |∇_ℓF|‖₂ ≥ 0.
"""
from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import _harness as H
import sparsefw
from sparsefw.data import get_datasets

HIDDEN, K, WIDTH, SEED = 32, 0.1, 2.0, 0
EVALS_PER_RUN = 100


def smooth_mlp(in_features: int, hidden: int, classes: int, seed: int) -> nn.Module:
    """Linear-tanh-Linear: twice differentiable, so F is L-smooth on the (compact) feasible set."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(in_features, hidden), nn.Tanh(), nn.Linear(hidden, classes))


def full_gap(model: nn.Module, groups: list[dict], x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """(F(θ), G(θ)) on the whole set (x, y): G from the dual norm of each k-support ball."""
    params = [g["params"][0] for g in groups]
    loss = F.cross_entropy(model(x), y)
    grads = torch.autograd.grad(loss, params)
    gap = 0.0
    for g, p, d in zip(groups, params, grads):
        c = g["constraint"]
        top = d.detach().abs().flatten().topk(c.k).values
        gap += float(torch.vdot(d.flatten(), p.detach().flatten()) + c.radius * top.norm())
    return float(loss.detach()), gap


def run_horizon(data, T: int, c: float, batch: int, rescale: str, seed: int = SEED, hidden: int = HIDDEN) -> dict:
    """SFW for T steps at α = c/√T; returns the evaluated iterations, losses, full gaps, and min gap."""
    x, y = data
    model = smooth_mlp(x[0].numel(), hidden, 10, seed)
    # norm_radius="init": every region at width × its expected initial norm, so each constraint,
    # biases included, is active (the setting the section describes)
    groups = sparsefw.constrain(model, "k_support", k=K, width=WIDTH, norm_radius="init")
    opt = sparsefw.SFW(groups, lr=c / math.sqrt(T), momentum=0.0, rescale=rescale)
    generator = torch.Generator().manual_seed(seed + 1)
    every = max(1, T // EVALS_PER_RUN)
    n = len(x)
    order, pos = torch.randperm(n, generator=generator), 0
    history = []                        # (t, F(θ_t), G(θ_t))
    for t in range(T + 1):
        if t % every == 0 or t == T:
            history.append((t, *full_gap(model, groups, x, y)))
        if t == T:
            break
        if pos + batch > n:  # a new epoch of sampling without replacement
            order, pos = torch.randperm(n, generator=generator), 0
        idx = order[pos:pos + batch]
        pos += batch
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x[idx]), y[idx]).backward()
        opt.step()
    steps, losses, gaps = map(list, zip(*history))
    return {"T": T, "steps": steps, "losses": losses, "gaps": gaps, "min_gap": min(gaps)}


def fit_slope(ts: list[int], values: list[float]) -> float:
    """Least-squares slope of log(value) against log(T)."""
    return float(np.polyfit(np.log(ts), np.log(values), 1)[0])


SERIES = {  # label → (rescale, batch rule, c)
    "gradient, b = min(T, n)": ("gradient", "growing", 0.5),
    "gradient, b = 64": ("gradient", 64, 0.5),
    "diameter (classic η = α/D), b = min(T, n)": ("diameter", "growing", 2.0),
}


def convergence(args) -> dict[str, str]:
    train, _, _ = get_datasets("mnist5k")
    data = (train.images, train.targets.long())
    horizons = [10, 40] if args.quick else [25, 100, 400, 1600]
    start, series = time.perf_counter(), {}
    for label, (rescale, batch_rule, c) in SERIES.items():
        series[label] = [run_horizon(data, T, c, min(T, len(data[0])) if batch_rule == "growing" else batch_rule, rescale)
                         for T in horizons]
    seconds = time.perf_counter() - start
    plot(series, horizons, args.results / "convergence.png")
    return {"convergence": report(series, horizons, seconds, args.command)}


def plot(series: dict, horizons: list[int], path: Path) -> None:
    fig, (ax, ax2) = H.pyplot().subplots(1, 2, figsize=(11, 4.2))
    for label, runs in series.items():
        mins = [r["min_gap"] for r in runs]
        ax.loglog(horizons, mins, marker="o", label=f"{label} (slope {fit_slope(horizons, mins):.2f})")
    first = series[next(iter(series))][0]["min_gap"]
    ts = np.array(horizons, dtype=float)
    ax.loglog(ts, first * (ts / ts[0]) ** -0.5, "k--", label="T^(-1/2) reference")
    ax.loglog(ts, first * (ts / ts[0]) ** -0.25, "k:", label="T^(-1/4) reference")
    ax.set(xlabel="horizon T (iterations), α = c/√T", ylabel="min over t ≤ T of G(θ_t)  (full-batch FW gap)",
           title="SFW on a tanh MLP, MNIST-5k, k-support balls")
    ax.legend(fontsize=7)
    for label, runs in series.items():
        ax2.semilogy(runs[-1]["steps"], runs[-1]["gaps"], label=label, alpha=0.8)
    ax2.set(xlabel=f"iteration t (run with T = {horizons[-1]})", ylabel="G(θ_t)",
            title="full-batch FW gap along the longest run")
    ax2.legend(fontsize=7)
    fig.tight_layout()
    H.save_plot(fig, path)


def report(series: dict, horizons: list[int], seconds: float, command: str) -> str:
    slopes = {label: fit_slope(horizons, [r["min_gap"] for r in runs]) for label, runs in series.items()}
    gaps = [[label, f"{SERIES[label][2]:g}", *(f"{r['min_gap']:.4g}" for r in runs), f"{slopes[label]:.2f}"]
            for label, runs in series.items()]
    losses = [[label, *(f"{r['losses'][-1]:.4f}" for r in runs)] for label, runs in series.items()]
    return H.section("convergence", command=command, seconds=seconds, hidden=HIDDEN, k=K, width=WIDTH, seed=SEED,
                     evals=EVALS_PER_RUN, losses=H.table(["series", *(f"T = {T}" for T in horizons)], losses),
                     gaps=H.table(["series", "c", *(f"T = {T}" for T in horizons), "fitted slope (log-log)"], gaps))


if __name__ == "__main__":
    H.main("bench_convergence.py", __doc__, {"convergence": H.Variant(convergence, "min FW gap against the horizon")})
