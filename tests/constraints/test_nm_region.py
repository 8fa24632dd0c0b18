"""NMKSupportBall (N:M semi-structured sparsity) against independent truths: every N:M support
enumerated (the LMO value and optimality), the atomic gauge solved by cvxpy, the special cases
(N = M: L2 ball; 1:1 with combine="max": L∞ ball), property tests, and a few SFW steps."""
from __future__ import annotations

import itertools
import json
import math

import cvxpy as cp
import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

import sparsefw
from sparsefw.constraints import L2Ball, LinfBall, NMKSupportBall, constraint_from_spec, lmos, parse_pattern

COMBINES = ("l2", "max")


def groups_of(shape, dim, m):
    """Independent grouping: lists of flat indices, runs of m consecutive positions along `dim`."""
    index = np.arange(math.prod(shape)).reshape(shape)
    lines = np.moveaxis(index, dim, -1).reshape(-1, shape[dim])
    return [list(line[s:s + m]) for line in lines for s in range(0, shape[dim], m)]


def supports(groups, n):
    """Every N:M support: one choice of min(n, |g|) entries in every group."""
    choices = [list(itertools.combinations(g, min(n, len(g)))) for g in groups]
    for pick in itertools.product(*choices):
        yield [i for part in pick for i in part]


def brute_dual(d, groups, n, combine):
    """max over the region's extreme points of <−d, v> / τ, by enumeration."""
    flat = d.reshape(-1)
    if combine == "l2":
        return max(np.linalg.norm(flat[s]) for s in supports(groups, n))
    return sum(max(np.linalg.norm(flat[list(s)]) for s in itertools.combinations(g, min(n, len(g)))) for g in groups)


def cvxpy_gauge(x, groups, n, combine):
    """The atomic gauge: min over decompositions x = Σ_S z_S (supp z_S ⊆ S) of Σ_S ‖z_S‖₂, S over
    the N:M supports ("l2"); for "max" the largest such gauge of one group (its own supports)."""
    flat = x.reshape(-1)

    def atomic(index_sets, entries):
        parts = [cp.Variable(len(s)) for s in index_sets]
        total = {i: 0 for i in entries}
        for s, z in zip(index_sets, parts):
            for j, i in enumerate(s):
                total[i] = total[i] + z[j]
        problem = cp.Problem(cp.Minimize(sum(cp.norm(z, 2) for z in parts)), [total[i] == flat[i] for i in entries])
        problem.solve(solver=cp.CLARABEL)
        return float(problem.value)

    if combine == "l2":
        return atomic(list(supports(groups, n)), [i for g in groups for i in g])
    return max(atomic(list(itertools.combinations(g, min(n, len(g)))), g) for g in groups)


CASES = [((2, 8), 1, 2, 4), ((3, 6), 1, 2, 4), ((5, 2), 0, 2, 4), ((1, 3, 2, 1), 1, 1, 2), ((2, 4, 1, 2), 1, 2, 4),
         ((9,), 0, 1, 3)]
IDS = [f"{'x'.join(map(str, s))}-dim{d}-{n}of{m}" for s, d, n, m in CASES]


@pytest.mark.parametrize("combine", COMBINES)
@pytest.mark.parametrize("shape,dim,n,m", CASES, ids=IDS)
def test_lmo_against_enumerated_supports(shape, dim, n, m, combine):
    rng = np.random.default_rng(len(shape) * 100 + dim * 10 + n)
    c = NMKSupportBall(shape, n, m, radius=1.3, dim=dim, combine=combine)
    groups = groups_of(shape, dim, m)
    assert c.groups == len(groups)
    for dtype, tol in ((torch.float64, 1e-10), (torch.float32, 2e-5)):
        d = rng.standard_normal(shape)
        v = c.lmo(torch.tensor(d, dtype=dtype)).double().numpy()
        truth = brute_dual(d, groups, n, combine)
        assert float((d * v).sum()) == pytest.approx(-1.3 * truth, rel=tol)
        assert float(c.dual_norm(torch.tensor(d))) == pytest.approx(truth, rel=1e-10)
        assert all(np.count_nonzero(v.reshape(-1)[g]) <= n for g in groups)        # N:M-sparse vertex
        assert float(c.norm(torch.tensor(v))) == pytest.approx(1.3, rel=tol)      # on the boundary


@pytest.mark.parametrize("combine", COMBINES)
@pytest.mark.parametrize("shape,dim,n,m", [((2, 4), 1, 2, 4), ((1, 6), 1, 2, 4), ((3, 3), 0, 1, 3)])
def test_gauge_against_cvxpy(shape, dim, n, m, combine):
    rng = np.random.default_rng(7)
    c = NMKSupportBall(shape, n, m, radius=1.0, dim=dim, combine=combine)
    groups = groups_of(shape, dim, m)
    for _ in range(3):
        x = rng.standard_normal(shape) * rng.choice([0.0, 1.0, 5.0], size=shape)
        assert float(c.norm(torch.tensor(x))) == pytest.approx(cvxpy_gauge(x, groups, n, combine), rel=1e-5, abs=1e-7)


def test_special_cases():
    d = torch.randn(5, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    full = NMKSupportBall((5, 8), 4, 4, radius=2.0)
    assert torch.allclose(full.lmo(d), L2Ball((5, 8), radius=2.0).lmo(d))
    assert float(full.norm(d)) == pytest.approx(float(d.norm()), rel=1e-12)
    inf = NMKSupportBall((5, 8), 1, 1, radius=2.0, combine="max")
    assert torch.allclose(inf.lmo(d), LinfBall((5, 8), radius=2.0).lmo(d))
    assert float(inf.norm(d)) == pytest.approx(float(d.abs().max()), rel=1e-12)
    assert inf.diameter == pytest.approx(LinfBall((5, 8), radius=2.0).diameter)
    assert parse_pattern("2:4") == (2, 4) and parse_pattern(" 1 : 8 ") == (1, 8)


def test_ties_zero_groups_and_mask():
    c = NMKSupportBall((2, 8), 2, 4, radius=1.0)
    d = torch.tensor([[-1.0, -1, -1, -1, 0, 0, 0, 0], [3, 0, 0, -3, 0, 1, 0, 0]])
    v = c.lmo(d)
    assert torch.equal(v != 0, torch.tensor([[True, True, False, False, False, False, False, False],
                                             [True, False, False, True, False, True, False, False]]))
    assert torch.equal(c.mask(d), torch.tensor([[True, True, False, False, True, True, False, False],
                                                [True, False, False, True, True, True, False, False]]))
    assert torch.equal(c.lmo(torch.zeros(2, 8)), torch.zeros(2, 8))


def test_conv_groups_run_along_input_channels():
    """Conv weight (out, in, kh, kw): a group is 4 consecutive input channels at one (out, kh, kw)."""
    w = torch.randn(3, 8, 2, 2, generator=torch.Generator().manual_seed(1))
    v = NMKSupportBall(w.shape, 2, 4, radius=1.0).lmo(w)
    per_group = (v != 0).reshape(3, 2, 4, 2, 2).sum(2)
    assert torch.all(per_group == 2)


finite = st.floats(-1e3, 1e3, allow_nan=False, width=64)


@settings(max_examples=60, deadline=None)
@given(data=st.data(), combine=st.sampled_from(COMBINES), n=st.integers(1, 4), m=st.integers(1, 5),
       rows=st.integers(1, 3), cols=st.integers(1, 9), dim=st.integers(0, 1))
def test_properties(data, combine, n, m, rows, cols, dim):
    n = min(n, m)
    shape = (rows, cols)
    c = NMKSupportBall(shape, n, m, radius=0.7, dim=dim, combine=combine)
    x = torch.tensor(data.draw(st.lists(finite, min_size=rows * cols, max_size=rows * cols)),
                     dtype=torch.float64).reshape(shape)
    d = torch.tensor(data.draw(st.lists(finite, min_size=rows * cols, max_size=rows * cols)),
                     dtype=torch.float64).reshape(shape)
    v = c.lmo(d)
    dual, gauge = float(c.dual_norm(d)), float(c.norm(x))
    assert float((x * d).sum()) <= gauge * dual * (1 + 1e-9) + 1e-9                         # Hölder
    assert float((d * v).sum()) == pytest.approx(-0.7 * dual, rel=1e-9, abs=1e-12)
    assert float(c.norm(v)) <= 0.7 * (1 + 1e-9)
    assert float(v.norm()) <= c.diameter / 2 * (1 + 1e-9)
    groups = groups_of(shape, dim, m)
    assert all(np.count_nonzero(v.numpy().reshape(-1)[g]) <= n for g in groups)
    assert float(c.norm(x)) >= float(x.norm()) * (1 - 1e-9) or combine == "max"           # ‖x‖₂ ≤ gauge ("l2")
    if gauge > 0:
        assert float(c.norm(c.shift_inside(x * (2 * 0.7 / gauge)))) == pytest.approx(0.7, rel=1e-9)


@pytest.mark.parametrize("combine", COMBINES)
def test_spec_round_trip_batching_low_precision_and_extremes(combine):
    c = NMKSupportBall((6, 10, 3), 2, 4, radius=1.5, combine=combine)
    rebuilt = constraint_from_spec(json.loads(json.dumps(c.to_spec())))
    assert type(rebuilt) is NMKSupportBall and rebuilt.to_spec() == c.to_spec() and rebuilt.diameter == c.diameter
    gen = torch.Generator().manual_seed(2)
    ds = [torch.randn(6, 10, 3, generator=gen) for _ in range(3)]
    others = [NMKSupportBall((6, 10, 3), 2, 4, radius=r, combine=combine) for r in (1.5, 0.5, 2.0)]
    for got, region, d in zip(lmos(others, ds), others, ds):
        assert torch.equal(got, region.lmo(d))
    assert torch.equal(rebuilt.lmo(ds[0]), c.lmo(ds[0]))
    for dtype in (torch.float16, torch.bfloat16):
        v = c.lmo(ds[0].to(dtype))
        assert v.dtype == dtype and torch.isfinite(v).all() and float(c.norm(v.float())) <= 1.5 * 1.01
    for dtype, scales, tol in ((torch.float64, (1e-40, 1e-300, 1e300), 1e-9),
                               (torch.float32, (1e-42, 1e-38, 1e37), 1e-6)):
        for scale in scales:
            d = (ds[0].double() * scale).to(dtype)
            v = c.lmo(d)
            assert torch.isfinite(v).all() and float(c.norm(v.double())) == pytest.approx(1.5, rel=tol)
            unit = d.double() / scale                    # the dual norm is homogeneous; its squares would overflow
            assert float((unit * v.double()).sum()) == pytest.approx(-1.5 * float(c.dual_norm(unit)), rel=tol)


@pytest.mark.parametrize("kwargs,pattern", [
    (dict(n=0), "n=0"), (dict(n=3, m=2), "n=3, m=2"), (dict(m=2.0), "m=2.0"), (dict(n=True), "n=True"),
    (dict(dim=2), "dim=2"), (dict(combine="sum"), "combine='sum'"), (dict(radius=0.0), "radius=0.0")])
def test_bad_arguments(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        NMKSupportBall((4, 8), **{"radius": 1.0, **kwargs})


@pytest.mark.parametrize("bad", ["2/4", "4:2", "0:4", 2, "2:4:8", None])
def test_bad_pattern(bad):
    with pytest.raises(ValueError, match="pattern"):
        parse_pattern(bad)


@pytest.mark.parametrize("combine", COMBINES)
def test_sfw_steps_keep_the_iterate_feasible(combine):
    torch.manual_seed(0)
    layer = torch.nn.Linear(8, 3)
    region = NMKSupportBall(layer.weight.shape, 2, 4, radius=2.0, combine=combine)
    with torch.no_grad():
        layer.weight.copy_(region.shift_inside(layer.weight))
    opt = sparsefw.SFW([{"params": [layer.weight], "constraint": region},
                        {"params": [layer.bias], "constraint": L2Ball((3,), radius=1.0)}], lr=0.5, momentum=0.0,
                       rescale=None)
    x, y = torch.randn(32, 8), torch.randn(32, 3)
    for _ in range(20):
        opt.zero_grad()
        torch.nn.functional.mse_loss(layer(x), y).backward()
        opt.step()
        assert float(region.norm(layer.weight.detach())) <= 2.0 * (1 + 1e-5)
