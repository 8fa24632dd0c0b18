"""Gauges against their definitions (cvxpy, LPs over vertices), special cases of k, diameters."""
from __future__ import annotations

import itertools

import cvxpy as cp
import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from region_truths import (group_dual_brute, group_k_support_norm_cvxpy, k_support_norm_cvxpy, ksparse_vertices,
                           max_l2_over_subsets)
from sparsefw.constraints import (GroupKSupportBall, KSparsePolytope, KSupportBall, L1Ball, L2Ball, LinfBall, LpBall,
                                  NuclearBall, SpectralKSupportBall)

F64 = torch.float64


def _t(x):
    return torch.tensor(x, dtype=F64)


@pytest.mark.parametrize("k", [2, 3])
def test_k_support_norm_equals_gauge_of_its_definition(k):
    rng = np.random.default_rng(k)
    xs = [rng.standard_normal(6), np.array([3.0, 0.1, 0.1, 0.1, 0.0, -0.05]), np.array([1.0, -1.0, 1.0, 1.0, -1.0, 1.0])]
    for x in xs:
        assert float(KSupportBall((6,), k=k, radius=1.0).norm(_t(x))) == pytest.approx(k_support_norm_cvxpy(x, k), rel=1e-6)


def test_group_k_support_norm_equals_gauge_of_its_definition():
    x = np.random.default_rng(0).standard_normal((5, 3))
    x[1] *= 0.05
    assert float(GroupKSupportBall((5, 3), k=2, radius=1.0).norm(_t(x))) == pytest.approx(
        group_k_support_norm_cvxpy(x, 2), rel=1e-6)


def test_spectral_k_support_norm_is_the_k_support_norm_of_the_singular_values():
    rng = np.random.default_rng(1)
    U, _ = np.linalg.qr(rng.standard_normal((14, 5)))
    V, _ = np.linalg.qr(rng.standard_normal((18, 5)))
    s = np.array([4.0, 1.0, 0.9, 0.2, 0.0])
    x = (U * s) @ V.T
    for k in (2, 3):
        assert float(SpectralKSupportBall((14, 2, 9), k=k, radius=1.0).norm(_t(x.reshape(14, 2, 9)))) == pytest.approx(
            k_support_norm_cvxpy(s, k), rel=1e-6)


def test_k_sparse_gauge_equals_lp_over_vertices():
    rng = np.random.default_rng(2)
    vertices = ksparse_vertices(6, 2, 1.0)
    for x in [rng.standard_normal(6), np.array([2.0, 0.1, 0, 0, 0, 0]), rng.standard_normal(6) * [5, 1, 1, 1, 1, 1]]:
        lam = cp.Variable(len(vertices), nonneg=True)
        gauge = cp.Problem(cp.Minimize(cp.sum(lam)), [vertices.T @ lam == x]).solve(solver=cp.CLARABEL)
        assert float(KSparsePolytope((6,), k=2, radius=1.0).norm(_t(x))) == pytest.approx(gauge, rel=1e-6)


def test_k_equal_n_gives_the_l2_ball():
    gen = torch.Generator().manual_seed(0)
    d, x = torch.randn(5, 4, generator=gen, dtype=F64), torch.randn(5, 4, generator=gen, dtype=F64)
    l2 = L2Ball((5, 4), radius=2.0)
    for c in [KSupportBall((5, 4), k=20, radius=2.0), GroupKSupportBall((5, 4), k=5, radius=2.0),
              SpectralKSupportBall((5, 4), k=4, radius=2.0)]:
        torch.testing.assert_close(c.lmo(d), l2.lmo(d), rtol=1e-10, atol=1e-12)
        assert float(c.norm(x)) == pytest.approx(float(torch.linalg.vector_norm(x)), rel=1e-12)


def test_k_one_gives_l1_group_l1_and_nuclear_balls():
    gen = torch.Generator().manual_seed(1)
    d, x = torch.randn(6, 5, generator=gen, dtype=F64), torch.randn(6, 5, generator=gen, dtype=F64)
    torch.testing.assert_close(KSupportBall((6, 5), k=1, radius=1.5).lmo(d), L1Ball((6, 5), radius=1.5).lmo(d))
    assert float(KSupportBall((6, 5), k=1, radius=1.0).norm(x)) == pytest.approx(float(x.abs().sum()), rel=1e-12)
    assert float(KSparsePolytope((6, 5), k=1, radius=1.0).norm(x)) == pytest.approx(float(x.abs().sum()), rel=1e-12)
    assert float(KSparsePolytope((6, 5), k=30, radius=1.0).norm(x)) == pytest.approx(float(x.abs().max()), rel=1e-12)
    torch.testing.assert_close(KSparsePolytope((6, 5), k=30, radius=0.3).lmo(d), LinfBall((6, 5), radius=0.3).lmo(d))
    group = GroupKSupportBall((6, 5), k=1, radius=1.0)
    assert float(group.norm(x)) == pytest.approx(float(torch.linalg.vector_norm(x, dim=1).sum()), rel=1e-12)
    v = group.lmo(d)
    best = int(torch.linalg.vector_norm(d, dim=1).argmax())
    torch.testing.assert_close(v[best], -d[best] / torch.linalg.vector_norm(d[best]))
    assert float(v.abs().sum()) == pytest.approx(float(v[best].abs().sum()))
    spectral, nuclear = SpectralKSupportBall((6, 5), k=1, radius=1.0), NuclearBall((6, 5), radius=1.0)
    nuclear_norm = np.linalg.svd(x.numpy(), compute_uv=False).sum()
    assert float(spectral.norm(x)) == pytest.approx(nuclear_norm, rel=1e-12)
    assert float(nuclear.norm(x)) == pytest.approx(nuclear_norm, rel=1e-12)
    U, _, Vh = np.linalg.svd(d.numpy())
    expected = -np.outer(U[:, 0], Vh[0])
    torch.testing.assert_close(nuclear.lmo(d), _t(expected), rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(spectral.lmo(d), nuclear.lmo(d))


def test_lp_norms_and_diameters_against_numpy_and_brute_force():
    x = np.random.default_rng(3).standard_normal((4, 3))
    for p in (1.3, 2.0, 4.0):
        assert float(LpBall((4, 3), p=p, radius=1.0).norm(_t(x))) == pytest.approx(np.linalg.norm(x.ravel(), p), rel=1e-12)
    n = 12
    # Lp, p > 2: the farthest points from 0 are the scaled sign vectors; p < 2: the ±e_i
    assert LpBall((n,), p=4.0, radius=1.0).diameter == pytest.approx(2 * np.linalg.norm(np.ones(n) / n ** 0.25))
    assert LpBall((n,), p=1.5, radius=1.0).diameter == pytest.approx(2.0)
    vertices = ksparse_vertices(6, 2, 0.5)
    farthest = max(np.linalg.norm(a - b) for a, b in itertools.combinations(vertices, 2))
    assert KSparsePolytope((6,), k=2, radius=0.5).diameter == pytest.approx(farthest)
    assert LinfBall((6,), radius=0.5).diameter == pytest.approx(np.linalg.norm(np.ones(6) - (-np.ones(6))) * 0.5)
    for c in [L2Ball((6,), radius=0.5), L1Ball((6,), radius=0.5), KSupportBall((6,), k=2, radius=0.5),
              GroupKSupportBall((3, 2), k=2, radius=0.5), SpectralKSupportBall((3, 2), k=1, radius=0.5)]:
        assert c.diameter == pytest.approx(1.0)


@settings(max_examples=30, deadline=None)
@given(n=st.integers(2, 8), data=st.data())
def test_k_support_and_k_sparse_lmo_value_identity(n, data):
    k = data.draw(st.integers(1, n))
    seed = data.draw(st.integers(0, 2**31))
    d = np.random.default_rng(seed).standard_normal(n) * data.draw(st.sampled_from([1.0, 1e-3, 1e3]))
    d[: data.draw(st.integers(0, n - 1))] = 0.0  # some exact zeros
    value = float((_t(d) * KSupportBall((n,), k=k, radius=1.3).lmo(_t(d))).sum())
    assert value == pytest.approx(-1.3 * max_l2_over_subsets(np.abs(d), k), rel=1e-10, abs=1e-300)
    value = float((_t(d) * KSparsePolytope((n,), k=k, radius=0.7).lmo(_t(d))).sum())
    assert value == pytest.approx(0.7 * (ksparse_vertices(n, k, 1.0) @ d).min(), rel=1e-10, abs=1e-300)


@settings(max_examples=20, deadline=None)
@given(filters=st.integers(2, 6), rest=st.sampled_from([(1,), (3,), (2, 2), (2, 1, 3)]), data=st.data())
def test_group_lmo_value_identity_on_random_shapes(filters, rest, data):
    shape = (filters, *rest)
    k = data.draw(st.integers(1, filters))
    d = np.random.default_rng(data.draw(st.integers(0, 2**31))).standard_normal(shape)
    c = GroupKSupportBall(shape, k=k, radius=0.9)
    value = float((_t(d) * c.lmo(_t(d))).sum())
    assert value == pytest.approx(-0.9 * group_dual_brute(d, k), rel=1e-10)


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 9), data=st.data())
def test_k_support_norm_is_the_dual_of_top_k_l2(n, data):
    """‖x‖ = max over d of ⟨x,d⟩/‖top-k d‖: attained at d = the k-support subgradient, so check
    (a) Hölder for random d and (b) the norm never exceeds L1 nor falls below L2 (k-support sandwich)."""
    k = data.draw(st.integers(1, n))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**31)))
    x = rng.standard_normal(n) * rng.choice([0.0, 1.0, 100.0], size=n)
    c = KSupportBall((n,), k=k, radius=1.0)
    nrm = float(c.norm(_t(x)))
    assert np.linalg.norm(x) * (1 - 1e-12) <= nrm <= np.abs(x).sum() * (1 + 1e-12) + 1e-300
    for d in rng.standard_normal((20, n)):
        assert x @ d <= nrm * max_l2_over_subsets(np.abs(d), k) * (1 + 1e-12) + 1e-12
