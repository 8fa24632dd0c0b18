"""The contract every region fulfils, checked against independent truths (region_truths.py):
LMO value = −radius·dual norm, LMO optimality over sampled feasible points, feasibility,
Hölder, zero input, dtypes, determinism, spec round trip, shift_inside."""
from __future__ import annotations

import itertools
import json
import zlib

import numpy as np
import pytest
import torch

from region_truths import group_dual_brute, ksparse_vertices, max_l2_over_subsets, spectral_dual
from sparsefw.constraints import (GroupKSupportBall, KSparsePolytope, KSupportBall, L1Ball, L2Ball, LinfBall, LpBall,
                                  NuclearBall, SpectralKSupportBall, constraint_from_spec)


def _unit(rows: np.ndarray) -> np.ndarray:
    """Each row (any trailing shape) scaled to L2 norm 1."""
    return rows / np.linalg.norm(rows.reshape(len(rows), -1), axis=1).reshape(-1, *[1] * (rows.ndim - 1))


def _random_sparse_unit(rng, n, k, count):
    """count random vectors in R^n with ≤ k nonzeros and L2 norm 1 (points of the k-support ball)."""
    rows = np.zeros((count, n))
    for row in rows:
        support = rng.choice(n, size=k, replace=False)
        row[support] = rng.standard_normal(k)
    return _unit(rows)


def _extreme_points(name, c, rng, count=200):
    """Points of C built from C's definition (never from the code under test), flattened rows."""
    n, tau, shape = c.n, c.radius, tuple(c.shape)
    if name == "l2":
        return tau * _unit(rng.standard_normal((count, n)))
    if name == "l1":
        return tau * np.concatenate([np.eye(n), -np.eye(n)])
    if name == "linf":
        return tau * rng.choice([-1.0, 1.0], size=(count, n))
    if name.startswith("lp"):
        y = rng.standard_normal((count, n))
        return tau * y / np.linalg.norm(y, ord=c.p, axis=1, keepdims=True)
    if name == "ksparse":
        return ksparse_vertices(n, c.k, tau)
    if name == "ksupport":
        return tau * _random_sparse_unit(rng, n, c.k, count)
    if name == "group":
        f = shape[0]
        mask = np.stack([np.isin(np.arange(f), rng.choice(f, size=c.k, replace=False)) for _ in range(count)])
        y = rng.standard_normal((count, f, n // f)) * mask[:, :, None]
        return tau * _unit(y).reshape(count, n)
    if name in ("spectral", "nuclear"):
        rows_, cols = shape[0], n // shape[0]
        y = rng.standard_normal((count, rows_, c.k)) @ rng.standard_normal((count, c.k, cols))
        return tau * _unit(y).reshape(count, n)
    raise AssertionError(name)


def _independent_dual(name, c, d: np.ndarray) -> float:
    flat = d.reshape(-1)
    if name == "l2":
        return float(np.linalg.norm(flat))
    if name == "l1":
        return float(np.abs(flat).max())
    if name == "linf":
        return float(np.abs(flat).sum())
    if name.startswith("lp"):
        return float(np.linalg.norm(flat, ord=c.q))
    if name == "ksparse":
        return float(-(ksparse_vertices(c.n, c.k, 1.0) @ flat).min())
    if name == "ksupport":
        return max_l2_over_subsets(np.abs(flat), c.k)
    if name == "group":
        return group_dual_brute(d, c.k)
    if name in ("spectral", "nuclear"):
        return spectral_dual(d, c.k)
    raise AssertionError(name)


FACTORIES = {
    "l2": lambda s: L2Ball(s, radius=1.7),
    "l1": lambda s: L1Ball(s, radius=0.9),
    "linf": lambda s: LinfBall(s, radius=0.4),
    "lp1.5": lambda s: LpBall(s, p=1.5, radius=0.8),
    "lp3": lambda s: LpBall(s, p=3, radius=1.3),
    "ksparse": lambda s: KSparsePolytope(s, k=3, radius=0.6),
    "ksupport": lambda s: KSupportBall(s, k=0.3, radius=2.0),
    "group": lambda s: GroupKSupportBall(s, k=2, radius=1.5),
    "spectral": lambda s: SpectralKSupportBall(s, k=2, radius=1.2),
    "nuclear": lambda s: NuclearBall(s, radius=0.7),
}
MATRIX_ONLY = {"group", "spectral", "nuclear"}
SHAPES = [(11,), (3, 4), (4, 2, 1, 2), (14, 3, 2, 2)]  # the last takes the Gram-eigh path of topk_svd


def _cases():
    for name, shape in itertools.product(FACTORIES, SHAPES):
        if len(shape) == 1 and name in MATRIX_ONLY:
            continue
        if shape == (14, 3, 2, 2) and name in ("ksparse", "ksupport", "l1"):
            continue  # brute force over 168 entries is too large; covered on smaller shapes
        yield name, shape


CASES = list(_cases())
IDS = [f"{n}-{'x'.join(map(str, s))}" for n, s in CASES]
TOL = {torch.float32: 2e-5, torch.float64: 1e-10}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name,shape", CASES, ids=IDS)
def test_lmo_value_feasibility_and_optimality(name, shape, dtype):
    rng = np.random.default_rng(zlib.crc32(repr((name, shape)).encode()))
    c = FACTORIES[name](shape)
    d_np = rng.standard_normal(shape)
    d = torch.tensor(d_np, dtype=dtype)
    v = c.lmo(d)
    assert v.shape == d.shape and v.dtype == dtype and v.device == d.device
    value = float((d.double() * v.double()).sum())
    dual = _independent_dual(name, c, d_np)
    tol = TOL[dtype]
    assert value == pytest.approx(-c.radius * dual, rel=tol)
    assert float(c.dual_norm(d)) == pytest.approx(dual, rel=tol)
    assert float(c.norm(v)) == pytest.approx(c.radius, rel=tol)  # on the boundary since d ≠ 0
    points = _extreme_points(name, c, rng)
    assert value <= (points @ d_np.reshape(-1)).min() + tol * abs(value)
    # the gauge accepts every point of C built from the definition, and convex mixtures of them
    weights = rng.dirichlet(np.ones(len(points)), size=5)
    for x in np.concatenate([points[:20], weights @ points]):
        assert float(c.norm(torch.tensor(x.reshape(shape), dtype=dtype))) <= c.radius * (1 + tol)


@pytest.mark.parametrize("name,shape", CASES, ids=IDS)
def test_holder_and_shift_inside(name, shape):
    gen = torch.Generator().manual_seed(3)
    c = FACTORIES[name](shape)
    for _ in range(5):
        x, d = torch.randn(shape, generator=gen, dtype=torch.float64), torch.randn(shape, generator=gen, dtype=torch.float64)
        assert float((x * d).sum()) <= float(c.norm(x) * c.dual_norm(d)) * (1 + 1e-12)
        outside = x * (3 * c.radius / float(c.norm(x)))
        assert float(c.norm(c.shift_inside(outside))) == pytest.approx(c.radius, rel=1e-12)
        inside = x * (0.5 * c.radius / float(c.norm(x)))
        assert torch.equal(c.shift_inside(inside), inside)


@pytest.mark.parametrize("name,shape", CASES, ids=IDS)
def test_zero_input_and_zeros_kept(name, shape):
    c = FACTORIES[name](shape)
    v = c.lmo(torch.zeros(shape))
    assert torch.isfinite(v).all() and float(c.norm(v)) <= c.radius
    if name in ("spectral", "nuclear"):
        return
    # where the input vanishes on a structure (an entry; a filter for the group ball) v vanishes too
    d = torch.randn(shape, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    d[0] = 0
    assert torch.all(c.lmo(d)[0] == 0)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("name,shape", CASES, ids=IDS)
def test_low_precision_inputs(name, shape, dtype):
    c = FACTORIES[name](shape)
    d = torch.randn(shape, generator=torch.Generator().manual_seed(0)).to(dtype)
    v = c.lmo(d)
    assert v.dtype == dtype and torch.isfinite(v).all()
    assert float(c.norm(v)) <= c.radius * 1.01  # rounding to 8/11 mantissa bits
    assert float((d.double() * v.double()).sum()) == pytest.approx(-c.radius * float(c.dual_norm(d.float())), rel=1e-2)


@pytest.mark.parametrize("name,shape", CASES, ids=IDS)
def test_spec_round_trip_and_determinism(name, shape):
    c = FACTORIES[name](shape)
    spec = json.loads(json.dumps(c.to_spec()))
    rebuilt = constraint_from_spec(spec)
    assert type(rebuilt) is type(c) and rebuilt.shape == c.shape and rebuilt.radius == c.radius
    assert rebuilt.k == c.k and rebuilt.diameter == c.diameter
    d = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    assert torch.equal(rebuilt.lmo(d), c.lmo(d))
    assert torch.equal(c.lmo(d.clone()), c.lmo(d))


def test_k_resolution_and_spec_keeps_given_k():
    c = KSupportBall((10, 7), k=0.25, radius=1.0)
    assert c.k == 17 and c.to_spec()["k"] == 0.25
    assert constraint_from_spec(c.to_spec()).k == 17
    assert KSupportBall((10, 7), k=0.001, radius=1.0).k == 1
    assert GroupKSupportBall((10, 7), k=0.3, radius=1.0).k == 3
    assert SpectralKSupportBall((10, 3, 3, 3), k=0.3, radius=1.0).k == 3  # rank ≤ min(10, 27)
    assert SpectralKSupportBall((40, 3, 2, 2), k=1.0, radius=1.0).k == 12
    assert KSparsePolytope((5,), k=5, radius=1.0).k == 5
    assert NuclearBall((4, 6), radius=1.0).k == 1 and "k" not in NuclearBall((4, 6), radius=1.0).to_spec()
    assert L2Ball((3,), radius=1.0).k is None


def test_ties_go_to_the_lowest_index():
    d = -torch.ones(6, 1)
    assert torch.equal(KSparsePolytope((6, 1), k=2, radius=1.0).lmo(d).reshape(-1), torch.tensor([1.0, 1, 0, 0, 0, 0]))
    v = KSupportBall((6, 1), k=3, radius=1.0).lmo(d).reshape(-1)
    assert torch.equal(v != 0, torch.tensor([True, True, True, False, False, False]))
    assert L1Ball((6, 1), radius=1.0).lmo(d).reshape(-1)[0] == 1
    g = GroupKSupportBall((4, 2), k=1, radius=1.0).lmo(torch.ones(4, 2))
    assert torch.equal(g.abs().sum(1) != 0, torch.tensor([True, False, False, False]))


@pytest.mark.parametrize("make", [lambda s: L2Ball(s, radius=3.0), lambda s: KSupportBall(s, k=0.3, radius=3.0),
                                  lambda s: GroupKSupportBall(s, k=0.3, radius=3.0), lambda s: LpBall(s, p=1.5, radius=3.0),
                                  lambda s: SpectralKSupportBall(s, k=0.3, radius=3.0)])
def test_large_float32_lmo_outputs_stay_feasible(make):
    """Float32 reductions over ~10⁶ entries must be accurate enough that v stays in C."""
    shape = (384, 128, 3, 3)
    d = torch.randn(shape, generator=torch.Generator().manual_seed(0)) * torch.linspace(2, 0.01, 384)[:, None, None, None]
    c = make(shape)
    exact_norm = c.norm(c.lmo(d).double())
    assert abs(float(exact_norm) / c.radius - 1) <= 1e-6
