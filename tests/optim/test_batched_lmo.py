"""The batched LMOs of one step equal each region's own `lmo` (values, supports and tie-breaking)."""
import pytest
import torch

from sparsefw.constraints import (GroupKSupportBall, KSparsePolytope, KSupportBall, L1Ball, L2Ball, NuclearBall,
                                  SpectralKSupportBall)
from sparsefw.optim.batched_lmo import lmos


def _regions():
    """Several identical regions per kind (they get stacked), singletons, and unbatched kinds."""
    out = []
    for shape in [(6, 4, 3), (5,)]:
        out += [KSupportBall(shape, k=0.3, radius=2.0) for _ in range(3)]
        out += [KSparsePolytope(shape, k=3, radius=0.5) for _ in range(3)]
        out += [L2Ball(shape, radius=r) for r in (0.5, 1.0, 3.0)]
    out += [GroupKSupportBall((6, 4, 3), k=2, radius=1.5) for _ in range(3)]
    out += [KSupportBall((7, 2), k=3, radius=1.0), GroupKSupportBall((4, 9), k=1, radius=2.0),
            L1Ball((4,), radius=1.0), NuclearBall((4, 6), radius=1.0), SpectralKSupportBall((4, 6), k=2, radius=1.0)]
    return out


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("ties", [False, True])
def test_batched_lmos_equal_single_lmos(dtype, ties):
    gen = torch.Generator().manual_seed(0)
    regions = _regions()
    directions = []
    for i, c in enumerate(regions):
        d = torch.randn(c.shape, generator=gen)
        if ties:  # few distinct magnitudes: the k-th largest is shared by many entries and filters
            d = torch.randint(-2, 3, c.shape, generator=gen).float()
        if i % 5 == 0:
            d = torch.zeros(c.shape)
        directions.append(d.to(dtype))
    batched = lmos(regions, directions)
    for c, d, v in zip(regions, directions, batched):
        expected = c.lmo(d)
        assert v.shape == c.shape and v.dtype == d.dtype
        assert torch.equal(v != 0, expected != 0), c  # same support, ties broken alike
        torch.testing.assert_close(v, expected, rtol=1e-6, atol=1e-7)
