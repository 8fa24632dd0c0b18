"""CoupledGroupKSupportBall against brute force, closed forms and the single-tensor regions."""
import itertools

import pytest
import torch

from sparsefw.constraints import (CoupledGroupKSupportBall, GroupKSupportBall, KSupportBall, L2Ball,
                                  constraint_from_spec)


def _region(k, weights=None, radius=2.0):
    """Conv filters (4, 2, 3) along dim 0, a bias (4,), a tensor (3, 4) coupled along dim 1 with a
    permuted channel order, and a (8,) tensor with 2 positions per channel."""
    shapes = [(4, 2, 3), (4,), (3, 4), (8,)]
    dims = [0, 0, 1, 0]
    indices = [[[c] for c in range(4)], [[c] for c in range(4)], [[2], [0], [3], [1]],
               [[2 * c, 2 * c + 1] for c in range(4)]]
    return CoupledGroupKSupportBall(shapes, dims, indices, k=k, radius=radius, weights=weights)


def _group_vectors(region, x):
    """Brute force: per channel, the concatenation of w_m·(member slice) over members."""
    members = region.unpack(x)
    out = []
    for c in range(region.channels):
        parts = [w * t.index_select(d, torch.tensor(idx[c])).reshape(-1)
                 for t, d, idx, w in zip(members, region.dims, region.indices, region.weights)]
        out.append(torch.cat(parts))
    return out


@pytest.mark.parametrize("k", [1, 2, 3, 4])
@pytest.mark.parametrize("weights", [None, [1.0, 3.0, 0.5, 2.0]])
def test_lmo_value_is_brute_force_over_k_subsets(k, weights):
    torch.manual_seed(k)
    region = _region(k, weights)
    for _ in range(5):
        d = torch.randn(region.n, dtype=torch.float64)
        v = region.lmo(d)
        # feasible, on the boundary, and <d, v> = −τ·max_{|S|=k} ‖d'_S‖ (d' = d/w per member)
        scaled = _group_vectors(region, d / region.entry_weight ** 2)   # w·(d/w²) = d/w
        best = max(sum(float(scaled[c].pow(2).sum()) for c in subset) ** 0.5
                   for subset in itertools.combinations(range(4), k))
        assert float(d @ v) == pytest.approx(-region.radius * best, rel=1e-10)
        assert float(region.dual_norm(d)) == pytest.approx(best, rel=1e-10)
        assert float(region.norm(v)) == pytest.approx(region.radius, rel=1e-9)
        # at most k channels nonzero, every entry of the others exactly 0
        nonzero = [bool(g.abs().sum() > 0) for g in _group_vectors(region, v)]
        assert sum(nonzero) == k


@pytest.mark.parametrize("k", [1, 2, 4])
def test_norm_is_k_support_norm_of_group_norms(k):
    torch.manual_seed(0)
    region = _region(k, [1.0, 3.0, 0.5, 2.0])
    x = torch.randn(region.n, dtype=torch.float64)
    group_norms = torch.stack([g.norm() for g in _group_vectors(region, x)])
    assert float(region.norm(x)) == pytest.approx(float(KSupportBall((4,), k=k, radius=1.0).norm(group_norms)),
                                                  rel=1e-12)


def test_edge_cases_equal_l2_ball_and_group_l1():
    torch.manual_seed(1)
    full, one = _region(4), _region(1)
    d = torch.randn(full.n, dtype=torch.float64)
    torch.testing.assert_close(full.lmo(d), L2Ball((full.n,), radius=2.0).lmo(d))
    torch.testing.assert_close(full.norm(d), d.norm())
    assert float(one.norm(d)) == pytest.approx(float(sum(g.norm() for g in _group_vectors(one, d))), rel=1e-12)


def test_single_member_equals_group_k_support_ball():
    torch.manual_seed(2)
    region = CoupledGroupKSupportBall([(5, 3, 2)], [0], [[[c] for c in range(5)]], k=2, radius=1.5)
    reference = GroupKSupportBall((5, 3, 2), k=2, radius=1.5)
    d = torch.randn(5, 3, 2, dtype=torch.float64)
    torch.testing.assert_close(region.unpack(region.lmo(d.reshape(-1)))[0], reference.lmo(d))
    torch.testing.assert_close(region.norm(d.reshape(-1)), reference.norm(d))


def test_convex_combinations_of_vertices_stay_feasible_and_spec_round_trips():
    torch.manual_seed(3)
    region = _region(2, [1.0, 3.0, 0.5, 2.0])
    vertices = [region.lmo(torch.randn(region.n)) for _ in range(6)]
    mix = torch.softmax(torch.randn(6), 0)
    assert float(region.norm(sum(a * v for a, v in zip(mix, vertices)))) <= region.radius * (1 + 1e-5)
    rebuilt = constraint_from_spec(region.to_spec())
    d = torch.randn(region.n)
    torch.testing.assert_close(rebuilt.lmo(d), region.lmo(d), rtol=0, atol=0)
    assert rebuilt.to_spec() == region.to_spec()
    assert region.diameter == pytest.approx(2 * 2.0 / 0.5)


def test_invalid_arguments_raise():
    with pytest.raises(ValueError, match="partition"):
        CoupledGroupKSupportBall([(4,)], [0], [[[0], [1], [1], [3]]], k=1, radius=1.0)
    with pytest.raises(ValueError, match="k"):
        _region(5)
    with pytest.raises(ValueError, match="weights"):
        _region(1, [1.0, -1.0, 1.0, 1.0])
