"""SpectralBall and SpectralPolytope (the rank-k spectral polytope) against their closed forms from a
float64 numpy SVD and against cvxpy's solution of the LMO over {‖V‖_op ≤ τ, ‖V‖_* ≤ kτ}: value,
feasibility, the vertex −τ·U_kV_kᵀ, the gauge, special cases (k = 1 nuclear ball, k = r spectral
ball), zeros kept, spec round trip, batched LMOs and the planned SFW step against the reference path."""
import cvxpy as cp
import numpy as np
import pytest
import torch

from sparsefw import SFW
from sparsefw.constraints import NuclearBall, SpectralBall, SpectralPolytope, constraint_from_spec, lmos
from sparsefw.optim.functional import sfw

# (shape, k): wide, tall, 4-D conv view, short side ≤ 8 (svd path) and > 8 (Gram-eigh path of top_k_svd)
CASES = [((6, 10), 2), ((10, 6), 3), ((4, 3, 2, 2), 2), ((16, 24), 4), ((30, 12), 5), ((12, 20), 12)]
TOL = {torch.float32: 2e-5, torch.float64: 1e-10}


def _sv(x) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return np.linalg.svd(x.reshape(x.shape[0], -1), compute_uv=False)


def _region(shape, k, radius=1.5):
    return SpectralBall(shape, radius) if k == min(shape[0], int(np.prod(shape[1:]))) else \
        SpectralPolytope(shape, k=k, radius=radius)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape,k", CASES)
def test_lmo_is_minus_tau_uk_vkT(shape, k, dtype):
    rng = np.random.default_rng(k)
    d = rng.standard_normal(shape)
    c = _region(shape, k)
    v = c.lmo(torch.tensor(d, dtype=dtype))
    assert v.shape == c.shape and v.dtype == dtype
    U, s, Vt = np.linalg.svd(d.reshape(shape[0], -1), full_matrices=False)
    expected = -c.radius * U[:, :k] @ Vt[:k]
    np.testing.assert_allclose(v.double().numpy().reshape(shape[0], -1), expected, atol=50 * TOL[dtype])
    value = float((torch.tensor(d) * v.double()).sum())
    assert value == pytest.approx(-c.radius * s[:k].sum(), rel=TOL[dtype])
    assert float(c.dual_norm(torch.tensor(d))) == pytest.approx(s[:k].sum(), rel=1e-10)
    sv = _sv(v.double())
    assert sv.max() <= c.radius * (1 + TOL[dtype]) and sv.sum() <= k * c.radius * (1 + TOL[dtype])
    assert float(c.norm(v.double())) == pytest.approx(c.radius, rel=TOL[dtype])


@pytest.mark.parametrize("shape,k", [((4, 5), 1), ((4, 5), 2), ((5, 3), 3)])
def test_lmo_value_equals_cvxpy_over_the_intersection(shape, k):
    """min <M, V> s.t. σ_max(V) ≤ τ, ‖V‖_* ≤ kτ (the polytope's H-description) equals the LMO value."""
    rng = np.random.default_rng(7)
    d, tau = rng.standard_normal(shape), 1.3
    V = cp.Variable(shape)
    problem = cp.Problem(cp.Minimize(cp.sum(cp.multiply(d, V))), [cp.sigma_max(V) <= tau, cp.normNuc(V) <= k * tau])
    problem.solve(solver=cp.SCS, eps=1e-9)
    v = _region(shape, k, tau).lmo(torch.tensor(d))
    assert float((torch.tensor(d) * v).sum()) == pytest.approx(problem.value, rel=1e-5)


def test_gauge_equals_cvxpy_and_closed_form():
    """gauge(X) = min{t : ‖X‖_op ≤ t, ‖X‖_* ≤ k t} = max(σ₁, Σσ/k)."""
    rng = np.random.default_rng(3)
    for k in (1, 2, 4):
        x = rng.standard_normal((4, 6)) * np.array([3.0, 1.0, 0.3, 0.1])[:, None]
        t = cp.Variable()
        cp.Problem(cp.Minimize(t), [cp.sigma_max(x) <= t, cp.normNuc(x) <= k * t]).solve(solver=cp.SCS, eps=1e-9)
        s = _sv(x)
        c = SpectralPolytope((4, 6), k=k, radius=1.0)
        assert float(c.norm(torch.tensor(x))) == pytest.approx(max(s[0], s.sum() / k), rel=1e-10)
        assert float(c.norm(torch.tensor(x))) == pytest.approx(t.value, rel=1e-5)
    assert float(SpectralBall((4, 6), radius=1.0).norm(torch.tensor(x))) == pytest.approx(_sv(x)[0], rel=1e-12)


def test_special_cases_and_diameter():
    d = torch.randn(7, 9, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    torch.testing.assert_close(SpectralPolytope((7, 9), k=1, radius=2.0).lmo(d), NuclearBall((7, 9), 2.0).lmo(d))
    torch.testing.assert_close(SpectralPolytope((7, 9), k=7, radius=2.0).lmo(d), SpectralBall((7, 9), 2.0).lmo(d))
    assert SpectralBall((7, 9), 2.0).k == 7 and SpectralPolytope((7, 3, 3), k=0.5, radius=1.0).k == 3
    # L2 diameter 2τ√k: attained by ±τ·U_kV_kᵀ, and no point of C has ‖x‖_F > τ√k
    c = SpectralPolytope((7, 9), k=3, radius=2.0)
    v = c.lmo(d)
    assert float((v - c.lmo(-d)).norm()) == pytest.approx(c.diameter, rel=1e-12)
    assert c.diameter == pytest.approx(2 * 2.0 * 3 ** 0.5)


def test_zeros_and_rank_deficient_directions_are_kept():
    for c in (SpectralBall((5, 12), 1.0), SpectralPolytope((12, 10), k=4, radius=1.0)):
        assert torch.count_nonzero(c.lmo(torch.zeros(c.shape))) == 0
        gen = torch.Generator().manual_seed(1)
        low = torch.randn(c.shape[0], 2, generator=gen, dtype=torch.float64) @ torch.randn(
            2, c.shape[1], generator=gen, dtype=torch.float64)
        v = c.lmo(low)
        assert int(np.linalg.matrix_rank(v.numpy(), tol=1e-8)) == 2          # no null directions added
        assert float((low * v).sum()) == pytest.approx(-c.radius * _sv(low)[:2].sum(), rel=1e-10)
        assert torch.all(v.abs() < 1e30) and c.lmo(low * 1e-30).isfinite().all()


def test_spec_round_trip_and_validation():
    for c in (SpectralBall((6, 2, 2), 1.5), SpectralPolytope((6, 8), k=0.25, radius=0.5),
              SpectralPolytope((6, 8), k=3, radius=0.5)):
        rebuilt = constraint_from_spec(c.to_spec())
        assert type(rebuilt) is type(c) and rebuilt.k == c.k and rebuilt.radius == c.radius
        d = torch.randn(c.shape)
        assert torch.equal(rebuilt.lmo(d), c.lmo(d))
    assert "k" not in SpectralBall((3, 4), 1.0).to_spec()
    for bad in (lambda: SpectralBall((5,), 1.0), lambda: SpectralPolytope((4, 5), k=5, radius=1.0),
                lambda: SpectralPolytope((4, 5), k=2, radius=0.0)):
        with pytest.raises(ValueError):
            bad()


def test_batched_lmos_equal_single():
    regions = [SpectralPolytope((12, 9), k=3, radius=r) for r in (1.0, 2.0, 0.5)] + [
        SpectralBall((5, 7), r) for r in (1.0, 3.0)]
    gen = torch.Generator().manual_seed(2)
    directions = [torch.randn(c.shape, generator=gen) for c in regions]
    directions[1] = torch.zeros(regions[1].shape)
    for c, d, v in zip(regions, directions, lmos(regions, directions)):
        torch.testing.assert_close(v, c.lmo(d), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_planned_step_equals_the_reference_path(dtype):
    regions = [SpectralBall((6, 4), 2.0), SpectralBall((6, 4), 1.0), SpectralPolytope((16, 12), k=3, radius=1.0)]
    gen = torch.Generator().manual_seed(0)

    def run(foreach):
        g = torch.Generator().manual_seed(0)
        params = [0.01 * torch.randn(c.shape, generator=g, dtype=dtype) for c in regions]
        buffers = [None] * 3
        for _ in range(4):
            grads = [torch.randn(c.shape, generator=g, dtype=dtype) for c in regions]
            sfw(params, grads, buffers, regions, lrs=[0.02, 0.1, 0.05], momentums=[0.9] * 3, dampenings=[0.9] * 3,
                rescales=[None, "gradient", None], foreach=foreach)
        return params
    for a, b in zip(run(False), run(None)):
        torch.testing.assert_close(a, b, rtol=0, atol=10 * torch.finfo(dtype).eps)
    del gen


def test_fixed_step_sfw_keeps_iterates_feasible():
    torch.manual_seed(0)
    w = torch.nn.Parameter(0.1 * torch.randn(8, 6))
    c = SpectralPolytope(w.shape, k=2, radius=1.0)
    opt = SFW([{"params": [w], "constraint": c}], lr=0.3, rescale=None)
    target = torch.randn(8, 6)
    for _ in range(30):
        opt.zero_grad()
        ((w - target) ** 2).sum().backward()
        opt.step()
        assert float(c.norm(w.detach())) <= 1.0 + 1e-5
    assert opt.fw_gaps()[0] >= -1e-6


def _f_n(s: np.ndarray, steps: int) -> np.ndarray:
    for _ in range(steps):
        s = 1.5 * s - 0.5 * s ** 3
    return s


@pytest.mark.parametrize("shape", [(6, 10), (12, 7), (16, 16)])
@pytest.mark.parametrize("steps", [3, 10, 30])
def test_newton_schulz_lmo_is_feasible_with_the_documented_shortfall(shape, steps):
    """v = −τ·U f_n(σ/‖M‖_F) Vᵀ: ‖v‖_op ≤ τ, and the value misses −τ·Σσ by exactly τ·Σσ(1 − f_n(σ/‖M‖_F))."""
    rng = np.random.default_rng(steps)
    d = rng.standard_normal(shape) * np.logspace(0, -1, shape[0])[:, None]
    c = SpectralBall(shape, 1.7, ns_steps=steps)
    v = c.lmo(torch.tensor(d)).numpy()
    s = np.linalg.svd(d, compute_uv=False)
    assert np.linalg.svd(v, compute_uv=False).max() <= c.radius * (1 + 1e-12)
    value = float((d * v).sum())
    expected = -c.radius * float((s * _f_n(s / np.linalg.norm(s), steps)).sum())
    assert value == pytest.approx(expected, rel=1e-9)
    shortfall = (value + c.radius * s.sum()) / (c.radius * s.sum())
    assert shortfall <= 1 - _f_n(s.min() / np.linalg.norm(s), steps) + 1e-12
    if steps == 30:       # converged: the exact vertex
        np.testing.assert_allclose(v, SpectralBall(shape, 1.7).lmo(torch.tensor(d)).numpy(), atol=1e-6)
    assert torch.count_nonzero(c.lmo(torch.zeros(shape))) == 0
    assert constraint_from_spec(c.to_spec()).ns_steps == steps
    with pytest.raises(ValueError, match="ns_steps"):
        SpectralBall(shape, 1.0, ns_steps=0)
