"""Bad arguments raise ValueError naming the argument and the value."""
from __future__ import annotations

import math

import pytest
import torch

from sparsefw.constraints import (GroupKSupportBall, KSparsePolytope, KSupportBall, L2Ball, LpBall, NuclearBall,
                                  SpectralKSupportBall, best_rank_k, constraint_from_spec, top_k_svd)

K_REGIONS = [KSupportBall, KSparsePolytope, GroupKSupportBall, SpectralKSupportBall]


@pytest.mark.parametrize("cls", K_REGIONS)
@pytest.mark.parametrize("k,pattern", [(0, "k=0"), (-2, "k=-2"), (0.0, "k=0.0"), (1.5, "k=1.5"), (True, "k=True"),
                                        (100, "k=100"), ("3", "k='3'"), (math.nan, "k=nan")])
def test_bad_k(cls, k, pattern):
    with pytest.raises(ValueError, match=pattern):
        cls((4, 6), k=k, radius=1.0)


@pytest.mark.parametrize("radius", [0, -1.0, math.nan, math.inf, "1", None])
@pytest.mark.parametrize("make", [lambda r: L2Ball((3,), radius=r), lambda r: KSupportBall((3,), k=1, radius=r),
                                  lambda r: NuclearBall((3, 2), radius=r), lambda r: LpBall((3,), p=2.5, radius=r)])
def test_bad_radius(make, radius):
    with pytest.raises(ValueError, match="radius"):
        make(radius)


@pytest.mark.parametrize("p", [1, 0.5, -2, math.inf, math.nan, True, "2"])
def test_bad_p(p):
    with pytest.raises(ValueError, match=f"p={p!r}"):
        LpBall((3,), p=p, radius=1.0)


@pytest.mark.parametrize("make", [lambda s: GroupKSupportBall(s, k=1, radius=1.0),
                                  lambda s: SpectralKSupportBall(s, k=1, radius=1.0), lambda s: NuclearBall(s, radius=1.0)])
def test_one_dimensional_shape_rejected_for_matrix_regions(make):
    with pytest.raises(ValueError, match=r"at least 2 dims.*shape=\(5,\)"):
        make((5,))


@pytest.mark.parametrize("shape", [(), (0, 3), (3, -1), "ab", None])
def test_bad_shape(shape):
    with pytest.raises(ValueError, match="shape"):
        L2Ball(shape, radius=1.0)


@pytest.mark.parametrize("c", [L2Ball((3, 4), radius=1.0), KSupportBall((3, 4), k=2, radius=1.0),
                               SpectralKSupportBall((3, 4), k=2, radius=1.0), GroupKSupportBall((3, 4), k=2, radius=1.0)])
def test_wrong_inputs_to_the_oracle_and_gauge(c):
    with pytest.raises(ValueError, match=r"shape \(4, 3\)"):
        c.lmo(torch.zeros(4, 3))
    with pytest.raises(ValueError, match=r"x has shape \(12,\)"):
        c.norm(torch.zeros(12))
    with pytest.raises(ValueError, match="floating-point.*int64"):
        c.lmo(torch.zeros(3, 4, dtype=torch.int64))
    with pytest.raises(ValueError, match="torch.Tensor"):
        c.dual_norm([[0.0] * 4] * 3)


def test_bad_spec_and_top_k_svd_arguments():
    with pytest.raises(ValueError, match="Nope"):
        constraint_from_spec({"type": "Nope", "shape": [3], "radius": 1.0})
    with pytest.raises(ValueError, match=r"k=5"):
        top_k_svd(torch.zeros(4, 6), 5)
    with pytest.raises(ValueError, match=r"k=0"):
        best_rank_k(torch.zeros(4, 6), 0)
    with pytest.raises(ValueError, match="2-D"):
        top_k_svd(torch.zeros(4), 1)
