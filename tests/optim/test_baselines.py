"""Baseline penalties and proximal steps against numpy sums, full SVDs, autograd's gradcheck, cvxpy's
exact minimisers, and their effect when training a small CNN on real digits."""
import cvxpy as cp
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sparsefw.models import build_model
from sparsefw.optim.baselines import (ProxStep, conv_weights, group_lasso_penalty, nuclear_norm_penalty,
                                      prox_group_lasso_, prox_nuclear_)


def tiny_net():
    torch.manual_seed(0)
    # two convs of equal matrix shape (batched SVD path), one other, one Linear (never penalised)
    return nn.Sequential(nn.Conv2d(2, 4, 3), nn.Conv2d(4, 4, 3), nn.Conv2d(4, 4, 3), nn.Conv2d(4, 6, 1),
                         nn.Flatten(), nn.Linear(6, 3))


def matrices(model):
    return [m.weight.detach().double().numpy().reshape(m.weight.shape[0], -1)
            for m in model.modules() if isinstance(m, nn.Conv2d)]


def test_penalty_values():
    model = tiny_net()
    mats = matrices(model)
    gl = 0.3 * sum(np.sqrt((m ** 2).sum(axis=1)).sum() for m in mats)
    nuc = 0.3 * sum(np.linalg.svd(m, compute_uv=False).sum() for m in mats)
    assert group_lasso_penalty(model, 0.3).item() == pytest.approx(gl, rel=1e-5)
    assert nuclear_norm_penalty(model, 0.3).item() == pytest.approx(nuc, rel=1e-5)
    only_first = [model[0].weight]
    first = np.linalg.svd(mats[0], compute_uv=False).sum()
    assert nuclear_norm_penalty(only_first, 1.0).item() == pytest.approx(first, rel=1e-5)
    assert group_lasso_penalty(nn.Linear(3, 3), 1.0).item() == 0.0


def test_gradients():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(3, 2, 2, 2, dtype=torch.float64, generator=g, requires_grad=True)
    s = torch.linalg.svdvals(w.detach().flatten(1))
    assert (s[:-1] - s[1:]).min() > 0.1                                  # distinct singular values
    assert torch.autograd.gradcheck(lambda x: nuclear_norm_penalty([x], 0.7), (w,))
    assert torch.autograd.gradcheck(lambda x: group_lasso_penalty([x], 0.7), (w,))
    nuclear_norm_penalty([w], 0.7).backward()
    u, _, vt = np.linalg.svd(w.detach().numpy().reshape(3, -1), full_matrices=False)
    np.testing.assert_allclose(w.grad.numpy().reshape(3, -1), 0.7 * u @ vt, atol=1e-10)   # ∂‖W‖_* = UVᵀ


def test_prox_nuclear_closed_form_and_cvxpy():
    g = torch.Generator().manual_seed(1)
    w = torch.randn(4, 3, 1, 2, dtype=torch.float64, generator=g)
    x0 = w.numpy().reshape(4, 6).copy()
    s = np.linalg.svd(x0, compute_uv=False)
    lr, lam = 0.5, (s[1] + s[2]) / 2 / 0.5                               # threshold between σ₂ and σ₃
    prox_nuclear_([w], lr, lam)
    out = w.numpy().reshape(4, 6)
    u, s, vt = np.linalg.svd(x0, full_matrices=False)
    np.testing.assert_allclose(out, u @ np.diag(np.maximum(s - lr * lam, 0)) @ vt, atol=1e-10)
    assert np.linalg.matrix_rank(out, tol=1e-8) == 2
    x = cp.Variable((4, 6))
    cp.Problem(cp.Minimize(0.5 * cp.sum_squares(x - x0) + lr * lam * cp.normNuc(x))).solve(solver=cp.SCS, eps=1e-9)
    np.testing.assert_allclose(out, x.value, atol=1e-4)


def test_prox_group_lasso_cvxpy():
    g = torch.Generator().manual_seed(2)
    scales = torch.tensor([0.2, 1, 2, 0.1, 3.0], dtype=torch.float64).view(5, 1, 1, 1)
    w = torch.randn(5, 2, 2, 1, dtype=torch.float64, generator=g) * scales
    x0 = w.numpy().reshape(5, 4).copy()
    t = 0.8
    prox_group_lasso_([w], 0.4, t / 0.4)
    out = w.numpy().reshape(5, 4)
    x = cp.Variable((5, 4))
    cp.Problem(cp.Minimize(0.5 * cp.sum_squares(x - x0) + t * cp.sum(cp.norm(x, 2, axis=1)))).solve(solver=cp.CLARABEL)
    np.testing.assert_allclose(out, x.value, atol=1e-6)
    norms = np.linalg.norm(x0, axis=1)
    assert ((np.linalg.norm(out, axis=1) == 0) == (norms <= t)).all() and (norms <= t).sum() == 2


def test_prox_step_follows_each_group_lr():
    model = tiny_net()
    opt = torch.optim.SGD([{"params": list(model[:2].parameters()), "lr": 0.5},
                           {"params": list(model[2:].parameters()), "lr": 2.0}], lr=1.0)
    for group in opt.param_groups:                                       # as a scheduler would
        group["lr"] /= 2                                                 # lrs now 0.25 and 1.0
    expected = [w.detach().clone() for w in conv_weights(model)] + [model[5].weight.detach().clone()]
    prox_nuclear_(expected[:2], 0.25, 0.3)
    prox_nuclear_(expected[2:4], 1.0, 0.3)
    ProxStep(opt, prox_nuclear_, 0.3).step()
    for w, e in zip(conv_weights(model) + [model[5].weight], expected):
        torch.testing.assert_close(w.detach(), e)                         # the Linear weight is untouched


def digits_batch():
    from sklearn.datasets import load_digits
    d = load_digits()
    x = torch.tensor(d.images[:256], dtype=torch.float32).unsqueeze(1) / 16
    return x, torch.tensor(d.target[:256])


def train(penalty=None, prox=None, steps=15, lr=0.1):
    """A few SGD steps of the small CNN on real 8×8 digits, same init and data for every variant:
    loss + penalty(model), or a ProxStep(prox, lam) after each optimizer step (prox = (fn, lam))."""
    model = build_model("cnn", 10, 1, 8, seed=0)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    prox_step = ProxStep(opt, *prox) if prox else None
    x, y = digits_batch()
    for step in range(steps):
        sl = slice(64 * (step % 4), 64 * (step % 4 + 1))
        loss = F.cross_entropy(model(x[sl]), y[sl])
        if penalty:
            loss = loss + penalty(model)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if prox_step:
            prox_step.step()
    return [w.detach() for w in conv_weights(model)]


def filter_norm_sum(ws):
    return sum(torch.linalg.vector_norm(w.flatten(1), dim=1).sum().item() for w in ws)


def singular_values(ws):
    return [torch.linalg.svdvals(w.flatten(1)) for w in ws]


@pytest.fixture(scope="module")
def plain():
    return train()


def test_training_with_penalties_shrinks_their_norm(plain):
    group = train(penalty=lambda m: group_lasso_penalty(m, 1e-2))
    nuclear = train(penalty=lambda m: nuclear_norm_penalty(m, 1e-2))
    assert filter_norm_sum(group) < 0.95 * filter_norm_sum(plain)
    nuc = lambda ws: sum(s.sum().item() for s in singular_values(ws))   # noqa: E731
    assert nuc(nuclear) < 0.95 * nuc(plain)


def test_proximal_training_gives_exact_zeros(plain):
    low_rank = train(prox=(prox_nuclear_, 0.5))
    assert all(s.min() > 1e-3 for s in singular_values(plain))
    assert sum((s < 1e-5).sum().item() for s in singular_values(low_rank)) > 10       # ranks dropped
    sparse = train(prox=(prox_group_lasso_, 1.0))
    assert all((w.flatten(1).abs().sum(1) > 0).all() for w in plain)
    assert sum((w.flatten(1).abs().sum(1) == 0).sum().item() for w in sparse) > 0     # whole filters zero


def test_validation():
    w = torch.randn(3, 4)
    for bad in (-1.0, float("nan"), True, "1"):
        with pytest.raises(ValueError, match="lam"):
            group_lasso_penalty([w], bad)
        with pytest.raises(ValueError, match="lam"):
            prox_nuclear_([w], 0.1, bad)
    with pytest.raises(ValueError, match="lr"):
        prox_group_lasso_([w], -0.1, 1.0)
    with pytest.raises(ValueError, match="single tensor"):
        nuclear_norm_penalty(w, 1.0)
    with pytest.raises(ValueError, match=r"params\[1\]"):
        nuclear_norm_penalty([w, torch.randn(3)], 1.0)
    opt = torch.optim.SGD([nn.Parameter(torch.randn(2, 2, 1, 1))], lr=0.1)
    with pytest.raises(ValueError, match="parameters of the optimizer"):
        ProxStep(opt, prox_nuclear_, 0.1, params=[nn.Parameter(torch.randn(2, 2))])
    with pytest.raises(ValueError, match="prox"):
        ProxStep(opt, "nuclear", 0.1)
