"""`lmos` (many regions at once, stacked by kind) equals each region's own `lmo`, and every output
is a solution: checked against the definitions (brute force / closed forms), with ties, zeros,
mixed kinds and shapes, float64 and half precision, and feasibility on a ~1M-entry float32 tensor."""
import numpy as np
import pytest
import torch

from region_truths import group_dual_brute, max_l2_over_subsets, spectral_dual
from sparsefw.constraints import (GroupKSupportBall, KSparsePolytope, KSupportBall, L1Ball, L2Ball, LinfBall, LpBall,
                                  NuclearBall, SpectralKSupportBall, best_rank_k, lmos)


def _regions():
    """Several identical regions per kind (stacked), different radii in one stack, singletons, and
    L2 balls of many shapes (one ragged group)."""
    out = []
    for shape in [(6, 4, 3), (5,)]:
        out += [KSupportBall(shape, k=0.3, radius=r) for r in (2.0, 2.0, 0.5)]
        out += [KSparsePolytope(shape, k=3, radius=r) for r in (0.5, 1.0, 0.5)]
        out += [L2Ball(shape, radius=r) for r in (0.5, 1.0, 3.0)]
        out += [LpBall(shape, p=1.5, radius=r) for r in (1.0, 2.0)]
        out += [L1Ball(shape, radius=r) for r in (1.0, 2.0)] + [LinfBall(shape, radius=r) for r in (1.0, 0.3)]
    out += [GroupKSupportBall((6, 4, 3), k=2, radius=r) for r in (1.5, 1.5, 4.0)]
    out += [SpectralKSupportBall((12, 4, 3), k=3, radius=r) for r in (1.0, 2.0, 1.0)]   # 12×12: Gram-eigh path
    out += [NuclearBall((5, 6), radius=r) for r in (1.0, 3.0)]                          # short side ≤ 8: svd path
    out += [SpectralKSupportBall((20, 3), k=2, radius=1.0), KSupportBall((7, 2), k=3, radius=1.0),
            GroupKSupportBall((4, 9), k=1, radius=2.0), L2Ball((2, 3, 4, 5), radius=0.7)]
    return out


def _directions(regions, dtype, ties, seed=0):
    gen = torch.Generator().manual_seed(seed)
    out = []
    for i, c in enumerate(regions):
        d = torch.randint(-2, 3, c.shape, generator=gen).double() if ties else torch.randn(c.shape, generator=gen,
                                                                                              dtype=torch.float64)
        if i % 7 == 0:
            d = torch.zeros(c.shape, dtype=torch.float64)
        out.append(d.to(dtype))
    return out


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("ties", [False, True])
def test_lmos_equal_single_lmos(dtype, ties):
    regions = _regions()
    directions = _directions(regions, dtype, ties)
    batched = lmos(regions, directions)
    for c, d, v in zip(regions, directions, batched):
        expected = c.lmo(d)
        assert v.shape == c.shape and v.dtype == d.dtype and v.device == d.device
        assert torch.equal(v != 0, expected != 0), c  # same support: ties broken alike
        if isinstance(c, (SpectralKSupportBall, L2Ball)):  # batched eigh/matmul, float64 norms: rounding may differ
            torch.testing.assert_close(v, expected, rtol=1e-5 if dtype != torch.float64 else 1e-12, atol=1e-6)
        else:
            assert torch.equal(v, expected), c


@pytest.mark.parametrize("ties", [False, True])
def test_lmos_solve_the_lmo_by_definition(ties):
    """<d, v> = −τ·(dual norm by brute force or numpy SVD), v on the boundary, v = 0 for d = 0."""
    regions = _regions()
    directions = _directions(regions, torch.float64, ties, seed=1)
    for c, d, v in zip(regions, directions, lmos(regions, directions)):
        dn = d.numpy()
        flat = np.abs(dn.reshape(-1))
        if not dn.any():
            assert not v.any(), c
            continue
        dual = {KSupportBall: lambda: (max_l2_over_subsets(flat, c.k) if c.n <= 12 else
                                       np.linalg.norm(np.sort(flat)[::-1][:c.k])),
                KSparsePolytope: lambda: np.sort(flat)[::-1][:c.k].sum(),
                L2Ball: lambda: np.linalg.norm(flat), L1Ball: lambda: flat.max(), LinfBall: lambda: flat.sum(),
                LpBall: lambda: (flat ** c.q).sum() ** (1 / c.q),
                GroupKSupportBall: lambda: group_dual_brute(dn, c.k),
                SpectralKSupportBall: lambda: spectral_dual(dn, c.k), NuclearBall: lambda: spectral_dual(dn, 1)}[type(c)]()
        assert float((d * v).sum()) == pytest.approx(-c.radius * dual, rel=1e-9, abs=1e-12), c
        assert float(c.norm(v)) == pytest.approx(c.radius, rel=1e-9), c


def test_tie_breaking_lowest_index_in_a_stack():
    """Rows with many equal magnitudes: the first ones (lowest index) fill up k, row by row."""
    d = torch.tensor([[1.0, -1, 1, -1, 1, 0], [0, 2, 2, -2, 1, 1], [0, 0, 0, 0, 0, 3]])
    ks = [KSupportBall((6,), k=3, radius=1.0) for _ in range(3)]
    kp = [KSparsePolytope((6,), k=3, radius=1.0) for _ in range(3)]
    expected = torch.tensor([[1, 1, 1, 0, 0, 0], [0, 1, 1, 1, 0, 0], [0, 0, 0, 0, 0, 1]], dtype=torch.bool)
    for v, e in zip(lmos(ks + kp, list(d) + list(d)), list(expected) * 2):
        assert torch.equal(v != 0, e)
    # the third row has only one nonzero: v keeps zeros (value −τ‖top-k‖ unchanged)
    assert torch.equal(lmos(kp, list(d))[2], torch.tensor([0.0, 0, 0, 0, 0, -1]))
    g = lmos([GroupKSupportBall((4, 2), k=2, radius=1.0)] * 2, [torch.ones(4, 2), torch.tensor([[0., 0], [1, 0], [0, 1], [0, 1]])])
    assert torch.equal(g[0].abs().sum(1) != 0, torch.tensor([True, True, False, False]))
    assert torch.equal(g[1].abs().sum(1) != 0, torch.tensor([False, True, True, False]))


def test_batched_best_rank_k_equals_one_by_one():
    gen = torch.Generator().manual_seed(2)
    for shape in [(4, 12, 40), (3, 40, 12), (2, 5, 9), (2, 3, 7, 30)]:
        M = torch.randn(shape, generator=gen, dtype=torch.float64)
        approx, size = best_rank_k(M, 3)
        flat = M.reshape(-1, *shape[-2:])
        for i, m in enumerate(flat):
            a, s = best_rank_k(m, 3)
            torch.testing.assert_close(approx.reshape(-1, *shape[-2:])[i], a, rtol=1e-10, atol=1e-12)
            torch.testing.assert_close(size.reshape(-1)[i], s, rtol=1e-12, atol=0)
            assert float(s) == pytest.approx(np.linalg.norm(np.linalg.svd(m.numpy(), compute_uv=False)[:3]), rel=1e-10)


@pytest.mark.parametrize("make", [lambda s: L2Ball(s, radius=3.0), lambda s: KSupportBall(s, k=0.1, radius=3.0),
                                  lambda s: GroupKSupportBall(s, k=0.3, radius=3.0), lambda s: LpBall(s, p=1.5, radius=3.0),
                                  lambda s: SpectralKSupportBall(s, k=0.3, radius=3.0)])
def test_batched_outputs_on_a_1m_float32_stack_stay_feasible(make):
    """Three float32 directions of 442k entries each (1.3M in one stack): every v lies in C to 1e-6."""
    shape = (384, 128, 3, 3)
    gen = torch.Generator().manual_seed(3)
    scale = torch.linspace(2, 0.01, 384)[:, None, None, None]
    directions = [torch.randn(shape, generator=gen) * scale * (10.0 ** i) for i in range(3)]
    regions = [make(shape) for _ in directions]
    for c, v in zip(regions, lmos(regions, directions)):
        assert abs(float(c.norm(v.double())) / c.radius - 1) <= 1e-6


def test_lmos_arguments_are_validated():
    with pytest.raises(ValueError, match="equal lengths"):
        lmos([L2Ball((3,), radius=1.0)], [])
    with pytest.raises(ValueError, match=r"directions\[0\] has shape"):
        lmos([L2Ball((3,), radius=1.0)], [torch.zeros(4)])
    with pytest.raises(ValueError, match=r"constraints\[0\] must be a Constraint"):
        lmos(["l2"], [torch.zeros(4)])
