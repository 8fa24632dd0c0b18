"""Property: SFW iterates never leave their region, for every region type and rescale mode."""
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sparsefw import SFW
from sparsefw.constraints import (GroupKSupportBall, KSparsePolytope, KSupportBall, L1Ball, L2Ball, LinfBall,
                                  LpBall, NuclearBall, SpectralKSupportBall)

REGIONS = {
    "l1": lambda s, k, r: L1Ball(s, radius=r),
    "l2": lambda s, k, r: L2Ball(s, radius=r),
    "linf": lambda s, k, r: LinfBall(s, radius=r),
    "lp": lambda s, k, r: LpBall(s, p=1.5, radius=r),
    "k_sparse": lambda s, k, r: KSparsePolytope(s, k=k, radius=r),
    "k_support": lambda s, k, r: KSupportBall(s, k=k, radius=r),
    "group_k_support": lambda s, k, r: GroupKSupportBall(s, k=k, radius=r),
    "nuclear": lambda s, k, r: NuclearBall(s, radius=r),
    "spectral_k_support": lambda s, k, r: SpectralKSupportBall(s, k=k, radius=r),
}


@settings(max_examples=40, deadline=None)
@given(region=st.sampled_from(sorted(REGIONS)), rows=st.integers(1, 6), cols=st.integers(1, 6),
       k=st.floats(0.05, 1.0), radius=st.floats(0.01, 100.0), rescale=st.sampled_from([None, "diameter", "gradient",
                                                                                     "fast_gradient"]),
       lr=st.floats(0.0, 5.0), momentum=st.floats(0.0, 0.99), dampening=st.floats(0.0, 1.0),
       quadratic=st.booleans(), seed=st.integers(0, 2 ** 16))
def test_iterates_stay_feasible(region, rows, cols, k, radius, rescale, lr, momentum, dampening, quadratic, seed):
    gen = torch.Generator().manual_seed(seed)
    shape = (rows, cols)
    c = REGIONS[region](shape, k, radius)
    start = torch.randn(shape, generator=gen) * radius * float(torch.rand((), generator=gen)) * 3
    p = torch.nn.Parameter(c.shift_inside(start))
    opt = SFW([{"params": [p], "constraint": c}], lr=lr, momentum=momentum, dampening=dampening, rescale=rescale)
    target = torch.randn(shape, generator=gen) * radius * 5
    scale = torch.rand(shape, generator=gen) * 10
    for _ in range(30):
        # a random convex quadratic pulling outside the region, or pure noise
        p.grad = scale * (p.detach() - target) if quadratic else torch.randn(shape, generator=gen) * 100
        opt.step()
        assert float(c.norm(p.detach())) <= radius * (1 + 1e-5)
        m = opt.state[p].get("momentum_buffer", p.grad)
        assert opt.fw_gaps()[0] >= -1e-5 * c.diameter * float(m.double().norm())  # float32 ‖m‖² may underflow
