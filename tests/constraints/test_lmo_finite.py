"""A vertex is always finite (issue 23): for every region and every finite input — subnormal
entries, rank-deficient and zero inputs, magnitudes from the smallest subnormal to near the largest
float, float32/float64/bfloat16/float16 — the LMO returns a finite vertex of the region that attains
<M, v> = −τ·dual_norm(M) (the zero input: v = 0).

Truths are independent of sparsefw: the atoms of each region (support counts, ranks, norms) and its
dual norm in float64 numpy, evaluated at M / max|M| (the LMO is homogeneous of degree 0 in M).
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from sparsefw.constraints import (CoupledGroupKSupportBall, GroupKSupportBall, KSparsePolytope, KSupportBall, L1Ball,
                                  L2Ball, LinfBall, LpBall, NuclearBall, SpectralKSupportBall, lmos)
from sparsefw.constraints.base import lmo_stack

FIXTURE = Path(__file__).parent / "data" / "spectral_lmo_nonfinite_case.pt"
DTYPES = [torch.float32, torch.float64, torch.bfloat16, torch.float16]
#: relative tolerance of norms and LMO values: the output is rounded to the input's dtype
TOL = {torch.float64: 1e-9, torch.float32: 2e-5, torch.float16: 4e-3, torch.bfloat16: 3e-2}
#: shapes: matrix views with short side ≤ 8 (exact SVD) and > 8 (Gram-eigh), wide and tall
SHAPES = [(6, 5), (10, 2, 6), (20, 9), (3, 4, 2)]
COUPLED_WEIGHTS = (1.0, 2.0)


def _top_k_l2(values: np.ndarray, k: int) -> float:
    return float(np.linalg.norm(np.sort(np.abs(values))[::-1][:k]))


def _matrix(x: np.ndarray) -> np.ndarray:
    return x.reshape(x.shape[0], -1)


def _coupled(shape):
    """Two members (c, 3) and (c,) flattened into shape[0]·4 entries, channels along dim 0."""
    c = shape[0]
    return CoupledGroupKSupportBall([(c, 3), (c,)], [0, 0], [[[i] for i in range(c)]] * 2, k=max(1, c // 3),
                                    radius=1.0, weights=list(COUPLED_WEIGHTS))


def _coupled_groups(x: np.ndarray) -> np.ndarray:
    """(c, 4) packed entries per channel, each divided by its member's weight."""
    c = x.size // 4
    return np.concatenate([x[:3 * c].reshape(c, 3) / COUPLED_WEIGHTS[0], x[3 * c:].reshape(c, 1) / COUPLED_WEIGHTS[1]], 1)


def _coupled_vertex(v: np.ndarray) -> np.ndarray:
    """(c, 4) packed vertex entries per channel, times their member's weight (the primal norm's scaling)."""
    c = v.size // 4
    return np.concatenate([v[:3 * c].reshape(c, 3) * COUPLED_WEIGHTS[0], v[3 * c:].reshape(c, 1) * COUPLED_WEIGHTS[1]], 1)


def _rank_ok(v: np.ndarray, k: int, bound: float) -> bool:
    s = np.linalg.svd(_matrix(v), compute_uv=False)
    return len(s) <= k or s[k] <= bound


# kind -> (region for a shape, dual norm of M, is v an element of the region with τ = 1 (tol))
KINDS = {
    "k_support": (lambda s: KSupportBall(s, k=0.3, radius=1.0),
                  lambda m, r: _top_k_l2(m.ravel(), r.k),
                  lambda v, r, t: np.count_nonzero(v) <= r.k and np.linalg.norm(v) <= 1 + t),
    "group_k_support": (lambda s: GroupKSupportBall(s, k=0.4, radius=1.0),
                        lambda m, r: _top_k_l2(np.linalg.norm(_matrix(m), axis=1), r.k),
                        lambda v, r, t: np.count_nonzero(np.abs(_matrix(v)).sum(1)) <= r.k and np.linalg.norm(v) <= 1 + t),
    "spectral_k_support": (lambda s: SpectralKSupportBall(s, k=0.3, radius=1.0),
                           lambda m, r: _top_k_l2(np.linalg.svd(_matrix(m), compute_uv=False), r.k),
                           lambda v, r, t: _rank_ok(v, r.k, 4 * t) and np.linalg.norm(v) <= 1 + t),
    "nuclear": (lambda s: NuclearBall(s, radius=1.0),
                lambda m, r: float(np.linalg.svd(_matrix(m), compute_uv=False)[0]),
                lambda v, r, t: _rank_ok(v, 1, 4 * t) and np.linalg.norm(v) <= 1 + t),
    "l1": (lambda s: L1Ball(s, radius=1.0), lambda m, r: float(np.abs(m).max()),
           lambda v, r, t: np.count_nonzero(v) <= 1 and np.abs(v).sum() <= 1 + t),
    "l2": (lambda s: L2Ball(s, radius=1.0), lambda m, r: float(np.linalg.norm(m)),
           lambda v, r, t: np.linalg.norm(v) <= 1 + t),
    "linf": (lambda s: LinfBall(s, radius=1.0), lambda m, r: float(np.abs(m).sum()),
             lambda v, r, t: np.abs(v).max() <= 1 + t),
    "lp3": (lambda s: LpBall(s, p=3.0, radius=1.0), lambda m, r: float((np.abs(m) ** 1.5).sum() ** (1 / 1.5)),
            lambda v, r, t: (np.abs(v) ** 3).sum() ** (1 / 3) <= 1 + t),
    "lp1.5": (lambda s: LpBall(s, p=1.5, radius=1.0), lambda m, r: float((np.abs(m) ** 3).sum() ** (1 / 3)),
              lambda v, r, t: (np.abs(v) ** 1.5).sum() ** (1 / 1.5) <= 1 + t),
    "k_sparse": (lambda s: KSparsePolytope(s, k=0.3, radius=1.0),
                 lambda m, r: float(np.sort(np.abs(m.ravel()))[::-1][:r.k].sum()),
                 lambda v, r, t: np.count_nonzero(v) <= r.k and np.abs(v).max() <= 1 + t),
    "coupled": (_coupled, lambda m, r: _top_k_l2(np.linalg.norm(_coupled_groups(m), axis=1), r.k),
                lambda v, r, t: (np.count_nonzero(np.abs(_coupled_vertex(v)).sum(1)) <= r.k
                                 and np.linalg.norm(_coupled_vertex(v)) <= 1 + t)),
}
PATTERNS = ["gaussian", "rank_one", "subnormal_mix", "one_entry", "zero"]


def _region(kind: str, shape: tuple):
    region = KINDS[kind][0](shape)
    return region, (region.n,) if kind == "coupled" else shape


def _input(shape, dtype, pattern: str, magnitude: str, seed: int) -> torch.Tensor:
    """A finite tensor of `dtype`: the pattern scaled so that max|M| is the magnitude (below the
    normal range, 1e-40, 1e-30, 1, 1e30 or 0.9 × the largest float of the dtype)."""
    gen = torch.Generator().manual_seed(seed)
    base = torch.randn(shape, generator=gen, dtype=torch.float64)
    if pattern == "rank_one":
        base = torch.outer(torch.randn(shape[0], generator=gen, dtype=torch.float64),
                           torch.randn(math.prod(shape[1:]), generator=gen, dtype=torch.float64)).reshape(shape)
    elif pattern == "subnormal_mix":      # the fixture's trait: entries 2^-120 below the rest (subnormal in float32)
        base = torch.where(torch.rand(shape, generator=gen) < 0.5, base * 2.0 ** -120, base)
    elif pattern == "one_entry":
        base = torch.zeros(shape, dtype=torch.float64).index_put_((torch.zeros(len(shape), dtype=torch.long),), base.flatten()[:1])
    elif pattern == "zero":
        return torch.zeros(shape, dtype=dtype)
    info = torch.finfo(dtype)
    scale = {"subnormal": info.tiny / 8, "1e-40": 1e-40, "1e-30": 1e-30, "1": 1.0, "1e30": 1e30,
             "near_max": 0.9 * info.max}[magnitude]
    return (base / base.abs().max() * min(scale, 0.9 * info.max)).to(dtype)


def _check(kind: str, region, m: torch.Tensor, v: torch.Tensor, radius: float = 1.0) -> None:
    """v is finite, of M's dtype, an element of the region and attains −τ·dual_norm(M)."""
    _, dual, member = KINDS[kind]
    assert v.dtype == m.dtype and v.shape == m.shape
    assert torch.isfinite(v).all(), f"{kind}: non-finite vertex"
    top = float(m.double().abs().max())
    vv = v.double().numpy() / radius
    if top == 0:
        assert not vv.any(), f"{kind}: zero input, nonzero vertex"
        return
    tol = TOL[m.dtype]
    unit = m.double().numpy() / top
    assert member(vv, region, tol), f"{kind}: vertex outside the region"
    value, best = float((unit * vv).sum()), dual(unit, region)
    assert value == pytest.approx(-best, rel=tol, abs=0), f"{kind}: <M, v> = {value} vs −dual = {-best}"


MAGNITUDES = ["subnormal", "1e-40", "1e-30", "1", "1e30", "near_max"]


@settings(max_examples=400, deadline=None)
@given(kind=st.sampled_from(sorted(KINDS)), shape=st.sampled_from(SHAPES), dtype=st.sampled_from(DTYPES),
       pattern=st.sampled_from(PATTERNS), magnitude=st.sampled_from(MAGNITUDES), seed=st.integers(0, 2 ** 16))
def test_lmo_vertex_is_finite_feasible_and_optimal(kind, shape, dtype, pattern, magnitude, seed):
    region, shape = _region(kind, shape)
    m = _input(shape, dtype, pattern, magnitude, seed)
    _check(kind, region, m, region.lmo(m))


@settings(max_examples=150, deadline=None)
@given(kind=st.sampled_from(sorted(KINDS)), dtype=st.sampled_from(DTYPES),
       cases=st.lists(st.tuples(st.sampled_from(PATTERNS), st.sampled_from(MAGNITUDES), st.integers(0, 2 ** 16)),
                      min_size=2, max_size=4))
def test_batched_lmos_are_finite_feasible_and_optimal(kind, dtype, cases):
    """`lmos` (one stack of B directions, radii differing) and `lmo_stack` (the optimizer's kernel,
    on the working-precision stack): each row as its own LMO's truth."""
    region, shape = _region(kind, (10, 2, 6))
    regions = [KINDS[kind][0]((10, 2, 6)) for _ in cases]      # coupled regions: one group each
    radii = [0.5 + i for i in range(len(cases))]
    for r, radius in zip(regions, radii):
        r.radius = radius
    directions = [_input(shape, dtype, *case) for case in cases]
    for r, m, v, radius in zip(regions, directions, lmos(regions, directions), radii):
        _check(kind, r, m, v, radius)
    if kind in ("l2", "coupled"):       # L2 balls take the optimizer's closed form; coupled is one region
        return
    stack = torch.stack(directions).to(torch.float64 if dtype == torch.float64 else torch.float32)
    vertices = lmo_stack(type(region), regions, stack, torch.tensor(radii, dtype=stack.dtype))
    for r, m, v, radius in zip(regions, stack.unbind(0), vertices.unbind(0), radii):
        _check(kind, r, m, v, radius)


@settings(max_examples=100, deadline=None)
@given(shape=st.sampled_from([(10, 2, 6), (20, 9), (6, 5)]), dtype=st.sampled_from([torch.float32, torch.float64]),
       pattern=st.sampled_from(PATTERNS), magnitude=st.sampled_from(MAGNITUDES), seed=st.integers(0, 2 ** 16))
def test_warm_spectral_vertex_is_finite_and_feasible(shape, dtype, pattern, magnitude, seed):
    """`warm_lmo_rows` (SFW's spectral_refresh): the refresh is the exact LMO; a warm step from an
    ordinary direction's basis is a feasible rank-k matrix whose value lies in [−τ·dual, 0]."""
    region = SpectralKSupportBall(shape, k=0.3, radius=1.0)
    m = _input(shape, dtype, pattern, magnitude, seed)
    radii = torch.ones(1, dtype=dtype)
    exact, _ = region.warm_lmo_rows(m.unsqueeze(0), radii, None)
    _check("spectral_k_support", region, m, exact[0])
    _, basis = region.warm_lmo_rows(_input(shape, dtype, "gaussian", "1", seed + 1).unsqueeze(0), radii, None)
    warm, next_basis = region.warm_lmo_rows(m.unsqueeze(0), radii, basis)
    assert torch.isfinite(warm).all() and torch.isfinite(next_basis).all()
    top = float(m.double().abs().max())
    if top == 0:
        assert not warm.any()
        return
    vv, unit = warm[0].double().numpy(), m.double().numpy() / top
    assert KINDS["spectral_k_support"][2](vv, region, TOL[dtype])
    best = KINDS["spectral_k_support"][1](unit, region)
    assert -best * (1 + TOL[dtype]) <= float((unit * vv).sum()) <= 0


def _fixture() -> torch.Tensor:
    return torch.load(FIXTURE, weights_only=True)["momentum"]


@pytest.mark.parametrize("radius", [1.0, 37.5])
def test_fixture_momentum_gives_a_finite_optimal_vertex(radius):
    """The momentum that made the spectral LMO return NaN at step 728 (its float32 Gram matrix holds
    314 subnormal entries): exact, batched and warm paths."""
    m = _fixture()
    assert m.shape == (64, 32, 1, 5) and m.dtype == torch.float32
    region = SpectralKSupportBall(m.shape, k=0.3, radius=radius)
    _check("spectral_k_support", region, m, region.lmo(m), radius)
    _check("spectral_k_support", region, m, lmos([region, region], [m, m])[1], radius)
    warm, _ = region.warm_lmo_rows(m.unsqueeze(0), torch.tensor([radius]), None)
    _check("spectral_k_support", region, m, warm[0], radius)


def _eigh_failing(when):
    """torch.linalg.eigh that returns NaN eigenvectors for float32 inputs where `when(G)` holds —
    what float32 eigh did on the fixture's Gram matrix on the machine of issue 23."""
    eigh = torch.linalg.eigh

    def fake(G, *args, **kwargs):
        values, vectors = eigh(G, *args, **kwargs)
        if G.dtype == torch.float32 and when(G):
            vectors = torch.full_like(vectors, float("nan"))
        return torch.return_types.linalg_eigh((values, vectors))
    return fake


def test_fixture_survives_an_eigh_that_fails_on_subnormals(monkeypatch):
    """The subnormal entries of the Gram matrix are set to 0 before eigh sees them."""
    monkeypatch.setattr(torch.linalg, "eigh", _eigh_failing(lambda G: bool(((G != 0) & (G.abs() < 2.0 ** -126)).any())))
    m = _fixture()
    region = SpectralKSupportBall(m.shape, k=0.3, radius=1.0)
    _check("spectral_k_support", region, m, region.lmo(m))


@pytest.mark.parametrize("shape", [(64, 32, 1, 5), (40, 12)])
def test_float32_eigh_failure_falls_back_to_a_float64_svd(monkeypatch, shape):
    monkeypatch.setattr(torch.linalg, "eigh", _eigh_failing(lambda G: True))
    m = _fixture() if shape == (64, 32, 1, 5) else _input(shape, torch.float32, "gaussian", "1", 3)
    region = SpectralKSupportBall(shape, k=0.3, radius=1.0)
    _check("spectral_k_support", region, m, region.lmo(m))


def _raising(function, when):
    """`function` that raises LinAlgError ("failed to converge", as LAPACK did in a ResNet run of
    issue 23's benchmark) where `when(input)` holds."""
    def fake(A, *args, **kwargs):
        if when(A):
            raise torch.linalg.LinAlgError("linalg.eigh: The algorithm failed to converge because the input matrix "
                                           "is ill-conditioned or has too many repeated eigenvalues")
        return function(A, *args, **kwargs)
    return fake


@pytest.mark.parametrize("shape", [(64, 32, 1, 5), (40, 12), (6, 20)])
def test_a_lapack_error_in_float32_falls_back_to_float64(monkeypatch, shape):
    """Gram-eigh (long short side) or SVD (short side ≤ 8) raising in float32: float64 takes over."""
    monkeypatch.setattr(torch.linalg, "eigh", _raising(torch.linalg.eigh, lambda A: A.dtype == torch.float32))
    monkeypatch.setattr(torch.linalg, "svd", _raising(torch.linalg.svd, lambda A: A.dtype == torch.float32))
    m = _fixture() if shape == (64, 32, 1, 5) else _input(shape, torch.float32, "gaussian", "1", 3)
    region = SpectralKSupportBall(shape, k=0.3, radius=1.0)
    _check("spectral_k_support", region, m, region.lmo(m))


def test_a_float64_svd_error_falls_back_to_the_gram_eigenvectors(monkeypatch):
    monkeypatch.setattr(torch.linalg, "eigh", _raising(torch.linalg.eigh, lambda A: A.dtype == torch.float32))
    monkeypatch.setattr(torch.linalg, "svd", _raising(torch.linalg.svd, lambda A: True))
    m = _input((40, 12), torch.float32, "gaussian", "1", 3)
    region = SpectralKSupportBall((40, 12), k=0.3, radius=1.0)
    _check("spectral_k_support", region, m, region.lmo(m))
