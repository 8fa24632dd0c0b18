"""The convergence benchmark on a tiny problem: its Frank-Wolfe gap is the true one (brute force
over the supports of a small k-support ball), and the minimum gap of gradient-rescaled SFW with
α = c/√T falls as the horizon T grows."""
import itertools
import math
import sys
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import bench_convergence  # noqa: E402
import sparsefw  # noqa: E402


def _tiny_data(n=300, seed=0):
    from sparsefw.data import get_datasets
    train, _, _ = get_datasets("mnist5k")
    idx = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))[:n]
    return train.images[idx], train.targets[idx].long()


def _brute_force_gap(grad: torch.Tensor, theta: torch.Tensor, k: int, radius: float) -> float:
    """max over v in conv{‖v‖₀ ≤ k, ‖v‖₂ ≤ τ} of ⟨g, θ − v⟩: a linear function peaks at an extreme
    point, so enumerate supports S of size k and take v_S = −τ·g_S/‖g_S‖."""
    g, t = grad.double().flatten(), theta.double().flatten()
    best = max(float(g[list(s)].norm()) for s in itertools.combinations(range(g.numel()), k))
    return float(g @ t) + radius * best


def test_full_gap_matches_brute_force_over_supports():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 2))
    groups = sparsefw.constrain(model, "k_support", k=0.4, width=1.5)
    x, y = torch.randn(16, 1, 2, 2), torch.randint(0, 2, (16,))
    _, gap = bench_convergence.full_gap(model, groups, x, y)
    params = [g["params"][0] for g in groups]
    grads = torch.autograd.grad(nn.functional.cross_entropy(model(x), y), params)
    expected = sum(_brute_force_gap(d, p.detach(), g["constraint"].k, g["constraint"].radius)
                   for g, p, d in zip(groups, params, grads))
    assert gap >= 0
    assert math.isclose(gap, expected, rel_tol=1e-4)


def test_min_gap_falls_with_the_horizon():
    torch.set_num_threads(1)
    data = _tiny_data()
    mins = [bench_convergence.run_horizon(data, T, c=0.5, batch=32, rescale="gradient", hidden=8)["min_gap"]
            for T in (8, 64, 256)]
    assert all(m > 0 for m in mins)
    assert mins[0] > mins[1] > mins[2]
    assert mins[2] < 0.6 * mins[0]
