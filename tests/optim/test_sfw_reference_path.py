"""The planned multi-tensor step (`StepPlan`) against the single-tensor reference path of
`functional.sfw` (foreach=False: region by region, v = LMO(m), Δ = θ − v, G = <m, Δ>), over several
steps, for every region kind, mixed rescales, momenta and learning rates, masks, a multi-tensor
region and warm spectral LMOs.

Bit-identical: momentum buffers, spectral bases, parameters of every region but the L2 balls, and
the gaps of stacked batches. Where the planned path legitimately computes otherwise: L2 balls take
the closed form Δ = θ + (τ/‖m‖)·m and G from three norms (`L2Ball.frank_wolfe_terms`; measured:
parameters within 1.41 ulp of the tensor's largest entry after six steps, gaps within 2 ulp), and
rows of ≥ 4096 entries and multi-tensor regions take G as one BLAS dot, not a pairwise sum
(measured: ≤ 2 and ≤ 4 ulp)."""
import pytest
import torch

from sparsefw import SFW, constrain
from sparsefw.constraints import (CoupledGroupKSupportBall, GroupKSupportBall, KSparsePolytope, KSupportBall, L1Ball,
                                  L2Ball, LinfBall, LpBall, NuclearBall, SpectralKSupportBall)
from sparsefw.optim.functional import sfw
from tiny_training import small_cnn

COUPLED = CoupledGroupKSupportBall([(4, 2, 3), (4,), (3, 8)], [0, 0, 1],
                                   [[[c] for c in range(4)]] * 2 + [[[2 * c, 2 * c + 1] for c in range(4)]],
                                   k=2, radius=1.0, weights=[1.0, 2.0, 0.5])
REGIONS = [KSupportBall((6, 5), k=0.3, radius=2.0), KSupportBall((6, 5), k=0.3, radius=3.0), L2Ball((7,), 1.0),
           L2Ball((3, 4), 2.0), L1Ball((9,), 1.5), LinfBall((4, 3), 0.5), LpBall((10,), 3.0, 1.0),
           GroupKSupportBall((5, 2, 3), k=2, radius=2.0), SpectralKSupportBall((6, 4), k=2, radius=2.0),
           SpectralKSupportBall((6, 4), k=2, radius=1.0), NuclearBall((5, 3), 1.0),
           KSparsePolytope((12,), k=3, radius=1.0),
           KSupportBall((80, 60), k=0.1, radius=2.0), None, None, COUPLED, COUPLED, COUPLED]
L2 = [2, 3]
DOT_GAPS = {12: 2, 15: 4}    # ≥ 4096-entry rows, the multi-tensor region (gap on its first member): ulps


def _ulps(a: torch.Tensor, b: torch.Tensor) -> int:
    """Largest distance in units in the last place between same-signed entries of a and b."""
    assert torch.equal(torch.sign(a), torch.sign(b))
    ints = {torch.float32: torch.int32, torch.float64: torch.int64}[a.dtype]
    return int((a.contiguous().view(ints).long() - b.contiguous().view(ints).long()).abs().max())


def _run(foreach, dtype, refresh, masked, steps=6):
    gen = torch.Generator().manual_seed(0)
    shapes = [(5,) if r is None else r.shape for r in REGIONS[:-3]] + COUPLED.shapes
    params = [0.01 * torch.randn(s, generator=gen, dtype=torch.float64).to(dtype) for s in shapes]
    groups = list(range(len(REGIONS) - 3)) + [len(REGIONS) - 3] * 3
    group_lrs = [0.1, 0.05, torch.tensor(0.2, dtype=dtype), 0.3] * 5
    hyper = [(["gradient", None, "diameter", "fast_gradient"][g % 4], [0.9, 0.0, 0.5, 0.8][g % 4],
              [0.0, 0.0, 0.5, 0.8][g % 4]) for g in groups]
    buffers, states, history = [None] * len(params), [{} for _ in params], []
    for t in range(steps):
        grads = [torch.randn(p.shape, generator=gen, dtype=torch.float64).to(dtype) for p in params]
        gaps = sfw(params, grads, buffers, REGIONS, lrs=[group_lrs[g] for g in groups], groups=groups,
                   rescales=[h[0] for h in hyper], momentums=[h[1] for h in hyper], dampenings=[h[2] for h in hyper],
                   ok=torch.tensor(t != 2) if masked else None, states=states, spectral_refresh=refresh,
                   foreach=foreach)
        history.append([[x.clone() for x in params], [None if b is None else b.clone() for b in buffers],
                        [None if g is None else g.clone() for g in gaps],
                        [st.get("spectral_basis") for st in states]])
    return history


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("refresh, masked", [(None, False), (2, False), (None, True)], ids=["exact", "warm", "masked"])
def test_planned_path_equals_the_single_tensor_reference(dtype, refresh, masked):
    reference, planned = _run(False, dtype, refresh, masked), _run(None, dtype, refresh, masked)
    for t, ((p_ref, m_ref, g_ref, u_ref), (p, m, g, u)) in enumerate(zip(reference, planned)):
        for i in range(len(REGIONS)):
            assert (m_ref[i] is None) == (m[i] is None) and (m[i] is None or torch.equal(m_ref[i], m[i]))
            assert (u_ref[i] is None) == (u[i] is None) and (u[i] is None or torch.equal(u_ref[i], u[i]))
            if i in L2:
                scale = float(p_ref[i].abs().max()) * torch.finfo(dtype).eps
                torch.testing.assert_close(p[i], p_ref[i], rtol=0, atol=1.5 * scale)
            else:
                assert torch.equal(p[i], p_ref[i]), (t, i)
            assert (g_ref[i] is None) == (g[i] is None)
            if masked and t == 2 and g[i] is not None:
                assert g[i].isnan() and g_ref[i].isnan()
            elif i in L2 or i in DOT_GAPS:
                assert _ulps(g[i], g_ref[i]) <= (2 if i in L2 else DOT_GAPS[i]), (t, i)
            elif g[i] is not None:
                assert torch.equal(g[i], g_ref[i]), (t, i)
    assert refresh is None or all(reference[-1][3][i] is not None for i in (8, 9, 10))


def test_sfw_with_mixed_group_overrides_equals_the_reference():
    """`SFW` over one plan of groups with their own lr and rescale (1-D parameters rescale=None with
    a small lr, the others "gradient", as `sparsefw.assign` overrides them) moves every parameter
    as the reference path over the same lists does."""
    model = small_cnn(6, 4, 3)
    groups = constrain(model, "k_support", k=0.3, width=5.0)
    for group in groups:
        if group["params"][0].dim() == 1:
            group.update(lr=0.01, rescale=None)
    opt = SFW(groups, lr=0.2, momentum=0.9)
    params = [g["params"][0].detach().clone() for g in groups]
    buffers = [None] * len(params)
    gen = torch.Generator().manual_seed(1)
    for _ in range(4):
        grads = [torch.randn(p.shape, generator=gen) for p in params]
        for group, grad in zip(groups, grads):
            group["params"][0].grad = grad.clone()
        opt.step()
        gaps = sfw(params, grads, buffers, [g["constraint"] for g in groups], lrs=[g["lr"] for g in groups],
                   momentums=[0.9] * len(groups), dampenings=[0.0] * len(groups),
                   rescales=[g["rescale"] for g in groups], foreach=False)
        assert opt.fw_gaps() == [float(g) for g in gaps]
    assert {g["rescale"] for g in groups} == {None, "gradient"}
    for group, p in zip(groups, params):
        assert torch.equal(group["params"][0].detach(), p)
