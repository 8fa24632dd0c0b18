"""Deterministic Frank-Wolfe (full gradient, α_t = 2/(t+2)) reaches the cvxpy optimum of a least-squares
problem over a k-support ball, and its gap certifies the sub-optimality."""
import itertools

import cvxpy as cp
import numpy as np
import pytest
import torch

from sparsefw import SFW
from sparsefw.constraints import KSupportBall

N, K, RADIUS = 8, 3, 1.5


def _problem():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((12, N))
    b = a @ (3 * rng.standard_normal(N)) + 0.5 * rng.standard_normal(12)  # unconstrained optimum far outside
    return a, b


def _cvxpy_optimum(a, b):
    """The k-support ball as {Σ_S v_S : supp v_S ⊆ S, |S| = k, Σ_S ‖v_S‖₂ ≤ τ} (Argyriou et al. 2012)."""
    subsets = list(itertools.combinations(range(N), K))
    parts = cp.Variable((len(subsets), K))
    x = sum(np.eye(N)[:, list(s)] @ parts[i] for i, s in enumerate(subsets))
    objective = cp.Minimize(cp.sum_squares(a @ x - b))
    cp.Problem(objective, [cp.sum(cp.norm(parts, 2, axis=1)) <= RADIUS]).solve(solver=cp.CLARABEL)
    return float(objective.value), np.asarray(x.value)


def test_frank_wolfe_reaches_the_cvxpy_optimum():
    a_np, b_np = _problem()
    f_star, x_star = _cvxpy_optimum(a_np, b_np)
    a, b = torch.tensor(a_np), torch.tensor(b_np)
    region = KSupportBall((N,), k=K, radius=RADIUS)
    assert float(region.norm(torch.tensor(x_star))) == pytest.approx(RADIUS, rel=1e-4)  # optimum on the boundary

    x = torch.nn.Parameter(torch.zeros(N, dtype=torch.float64))
    opt = SFW([{"params": [x], "constraint": region}], lr=1.0, momentum=0.0, rescale=None)
    schedule = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 2.0 / (t + 2))

    def closure():
        opt.zero_grad()
        loss = ((a @ x - b) ** 2).sum()
        loss.backward()
        return loss

    values, gaps = [], []
    for _ in range(500):
        values.append(opt.step(closure).item())
        gaps.append(opt.fw_gaps()[0])
        schedule.step()
    values, gaps = np.array(values), np.array(gaps)
    assert values[-1] == pytest.approx(f_star, rel=1e-5)
    assert np.all(values >= f_star * (1 - 1e-6))
    assert np.all(gaps >= values - f_star - 1e-6 * f_star)  # the gap bounds the sub-optimality
    assert gaps[-50:].min() <= 1e-5 * f_star
