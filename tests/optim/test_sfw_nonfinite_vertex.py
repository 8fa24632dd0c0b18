"""The step's last line of defence: an LMO that returns nan or inf (monkeypatched here; the real
ones return finite vertices, tests/constraints/test_lmo_finite.py) never reaches the weights. The
step is masked like one with a non-finite gradient: the constrained weights stay, the gap is nan,
the step counts in `nonfinite_steps` (or raises); the momentum keeps the step's finite gradient."""
import pytest
import torch

from sparsefw import SFW
from sparsefw.constraints import CoupledGroupKSupportBall, KSupportBall, L2Ball, SpectralKSupportBall

RHO = 0.5


def _nan_rows(self, stack, radii):
    return torch.full_like(stack, float("nan"))


def _nan_warm_rows(self, stack, radii, basis):
    return torch.full_like(stack, float("nan")), torch.zeros(stack.shape[0], 4, 2, dtype=stack.dtype)


def _grad(shape, seed, dtype):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).to(dtype)


def _optimizer(region, masked, nonfinite="skip", refresh=None, dtype=torch.float32):
    """An SFW over one parameter of `region`, one L2 ball (closed-form step, same bucket) and one
    free parameter (SGD step, taken before the oracle runs)."""
    weight = torch.nn.Parameter(torch.zeros(region.shape, dtype=dtype))
    bias = torch.nn.Parameter(torch.zeros(3, dtype=dtype))
    free = torch.nn.Parameter(torch.ones(2, dtype=dtype))
    opt = SFW([{"params": [weight], "constraint": region}, {"params": [bias], "constraint": L2Ball((3,), 1.0)},
               {"params": [free]}], lr=0.3, momentum=RHO, nonfinite=nonfinite, spectral_refresh=refresh)
    opt._mask_on_device = masked
    return opt, [weight, bias, free]


def _step(opt, params, seed):
    for i, p in enumerate(params):
        p.grad = _grad(p.shape, 10 * seed + i, p.dtype)
    opt.step()


CASES = [(KSupportBall((4, 5), k=0.3, radius=1.0), "_lmo_rows", _nan_rows, None),
         (SpectralKSupportBall((4, 5), k=2, radius=1.0), "_lmo_rows", _nan_rows, None),
         (SpectralKSupportBall((4, 5), k=2, radius=1.0), "warm_lmo_rows", _nan_warm_rows, 3)]


@pytest.mark.parametrize("masked", [False, True], ids=["flag", "device"])
@pytest.mark.parametrize("region, method, fake, refresh", CASES, ids=["k_support", "spectral", "spectral_warm"])
def test_nonfinite_vertex_skips_the_constrained_step(monkeypatch, region, method, fake, refresh, masked):
    opt, params = _optimizer(region, masked, refresh=refresh)
    _step(opt, params, 0)
    weight, bias, free = params
    before = [p.detach().clone() for p in (weight, bias)]
    momentum = [opt.state[p]["momentum_buffer"].clone() for p in params]
    monkeypatch.setattr(type(region), method, fake)
    _step(opt, params, 1)
    assert all(torch.equal(p, q) for p, q in zip((weight, bias), before))
    assert all(g != g for g in opt.fw_gaps()[:2])
    assert opt.nonfinite_steps == 1
    for p, m, i in zip(params, momentum, range(3)):      # m₂ = ρ·m₁ + g₂: the gradient was finite
        torch.testing.assert_close(opt.state[p]["momentum_buffer"], RHO * m + _grad(p.shape, 10 + i, p.dtype))
    monkeypatch.undo()
    _step(opt, params, 2)
    assert not torch.equal(weight, before[0]) and torch.isfinite(weight).all()
    assert opt.nonfinite_steps == 1


@pytest.mark.parametrize("masked", [False, True], ids=["flag", "device"])
def test_nonfinite_vertex_raises_under_raise(monkeypatch, masked):
    region = KSupportBall((4, 5), k=0.3, radius=1.0)
    opt, params = _optimizer(region, masked, nonfinite="raise")
    _step(opt, params, 0)
    before = [p.detach().clone() for p in params[:2]]
    monkeypatch.setattr(KSupportBall, "_lmo_rows", _nan_rows)
    with pytest.raises(FloatingPointError, match="vertex"):
        _step(opt, params, 1)
    assert all(torch.equal(p, q) for p, q in zip(params[:2], before))


@pytest.mark.parametrize("masked", [False, True], ids=["flag", "device"])
def test_nonfinite_vertex_skips_a_joint_group(monkeypatch, masked):
    members = [torch.nn.Parameter(torch.zeros(4, 3, dtype=torch.float64)),
               torch.nn.Parameter(torch.zeros(4, dtype=torch.float64))]
    region = CoupledGroupKSupportBall([(4, 3), (4,)], [0, 0], [[[c] for c in range(4)]] * 2, k=2, radius=1.0)
    opt = SFW([{"params": members, "constraint": region}], lr=0.3, momentum=RHO)
    opt._mask_on_device = masked
    _step(opt, members, 0)
    before = [p.detach().clone() for p in members]
    monkeypatch.setattr(CoupledGroupKSupportBall, "_lmo_rows", _nan_rows)
    _step(opt, members, 1)
    assert all(torch.equal(p, q) for p, q in zip(members, before))
    assert opt.nonfinite_steps == 1 and opt.fw_gaps()[0] != opt.fw_gaps()[0]
    opt.nonfinite = "raise"
    with pytest.raises(FloatingPointError, match="vertex"):
        _step(opt, members, 2)
    assert all(torch.equal(p, q) for p, q in zip(members, before))


def test_subnormal_momentum_keeps_the_weights_finite():
    """Cause, not guard: a float32 gradient of 1e-40 entries made τ/‖m‖ overflow (L2 closed form)
    and the k-support normalisation overflow (2^149): both gave nan weights."""
    for region in (L2Ball((100,), 1.0), KSupportBall((100,), k=0.3, radius=1.0)):
        weight = torch.nn.Parameter(torch.zeros(100))
        opt = SFW([{"params": [weight], "constraint": region}], lr=0.1, momentum=0.9, rescale=None)
        weight.grad = torch.full((100,), 1e-40)
        opt.step()                                       # θ = 0.1·v, v pointing against the gradient
        assert torch.isfinite(weight).all() and float(region.norm(weight.detach())) <= 0.1 * (1 + 1e-6)
        assert opt.nonfinite_steps == 0 and (weight < 0).any() and not (weight > 0).any()
