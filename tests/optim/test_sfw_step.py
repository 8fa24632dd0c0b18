"""The SFW step against hand-written formulas and torch.optim.SGD; hyper-parameter validation."""
import math

import pytest
import torch

from sparsefw import SFW
from sparsefw.constraints import KSupportBall, L2Ball

from side_by_side import step_side_by_side


def _l2_vertex(m, radius):
    return -radius * m / m.norm()


def _reference_steps(theta, grads, radius, lr, momentum, dampening, rescale):
    """SFW on an L2 ball written out from docs/method.md#the-sfw-step (float64)."""
    theta, buf, gaps = theta.clone(), None, []
    for g in grads:
        buf = g.clone() if buf is None else momentum * buf + (1 - dampening) * g
        m = buf if momentum else g
        v = _l2_vertex(m, radius)
        s = {None: 1.0, "diameter": 1 / (2 * radius), "gradient": m.norm() / (theta - v).norm(),
             "fast_gradient": m.norm() / radius}[rescale]
        eta = min(max(lr * float(s), 0.0), 1.0)
        gaps.append(float(m @ (theta - v)))
        theta = (1 - eta) * theta + eta * v
    return theta, gaps


@pytest.mark.parametrize("rescale", [None, "diameter", "gradient", "fast_gradient"])
@pytest.mark.parametrize("momentum,dampening", [(0.0, 0.0), (0.9, 0.0), (0.8, 0.8), (0.5, 0.3)])
def test_step_matches_formulas(rescale, momentum, dampening):
    gen = torch.Generator().manual_seed(0)
    radius, lr = 2.0, 0.05
    theta0 = torch.randn(7, generator=gen, dtype=torch.float64)
    theta0 *= 0.5 * radius / theta0.norm()
    grads = [torch.randn(7, generator=gen, dtype=torch.float64) for _ in range(5)]
    p = torch.nn.Parameter(theta0.clone())
    opt = SFW([{"params": [p], "constraint": L2Ball(p.shape, radius=radius)}], lr=lr, momentum=momentum,
              dampening=dampening, rescale=rescale)
    gaps = []
    for g in grads:
        p.grad = g.clone()
        opt.step()
        gaps.append(opt.fw_gaps()[0])
    expected, expected_gaps = _reference_steps(theta0, grads, radius, lr, momentum, dampening, rescale)
    torch.testing.assert_close(p.detach(), expected, rtol=1e-12, atol=1e-12)
    assert gaps == pytest.approx(expected_gaps, rel=1e-10)


@pytest.mark.parametrize("momentum,dampening", [(0.0, 0.0), (0.9, 0.0), (0.9, 0.9), (0.7, 0.2)])
def test_unconstrained_group_is_sgd_with_momentum(momentum, dampening):
    gen = torch.Generator().manual_seed(1)
    w = [torch.randn(4, 3, generator=gen), torch.randn(3, generator=gen)]
    ours = [torch.nn.Parameter(t.clone()) for t in w]
    theirs = [torch.nn.Parameter(t.clone()) for t in w]
    sfw = SFW(ours, lr=0.03, momentum=momentum, dampening=dampening)
    sgd = torch.optim.SGD(theirs, lr=0.03, momentum=momentum, dampening=dampening)
    step_side_by_side(ours, theirs, sfw, sgd, [[torch.randn(t.shape, generator=gen) for t in w] for _ in range(6)])
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
    assert all(math.isnan(gap) for gap in sfw.fw_gaps())


def test_groups_with_overrides_equal_separate_optimizers():
    gen = torch.Generator().manual_seed(2)
    shapes = [(6, 5), (5,), (4,)]
    init = [0.1 * torch.randn(s, generator=gen) for s in shapes]
    regions = [KSupportBall(shapes[0], k=0.2, radius=3.0), L2Ball(shapes[1], radius=1.0), None]
    settings = [dict(lr=0.2, rescale="gradient"), dict(lr=0.01, rescale=None, momentum=0.5), dict(lr=0.05)]
    joint = [torch.nn.Parameter(t.clone()) for t in init]
    groups = [{"params": [p], "constraint": c, **s} for p, c, s in zip(joint, regions, settings)]
    opt = SFW(groups, momentum=0.9, dampening=0.1)
    single = [torch.nn.Parameter(t.clone()) for t in init]
    opts = [SFW([{"params": [p], "constraint": c}], **{"momentum": 0.9, "dampening": 0.1, **s})
            for p, c, s in zip(single, regions, settings)]
    for _ in range(5):
        grads = [torch.randn(s, generator=gen) for s in shapes]
        for a, b, g in zip(joint, single, grads):
            a.grad, b.grad = g.clone(), g.clone()
        opt.step()
        for o in opts:
            o.step()
    for a, b in zip(joint, single):
        assert torch.equal(a, b)
    assert opt.fw_gaps()[:2] == [o.fw_gaps()[0] for o in opts[:2]]


def test_fw_gap_is_the_duality_certificate():
    """G = <m, θ> − min_v <m, v> = <m, θ> + τ·dual_norm(m) ≥ 0, for the direction actually used."""
    gen = torch.Generator().manual_seed(3)
    region = KSupportBall((20,), k=4, radius=2.0)
    p = torch.nn.Parameter(region.shift_inside(torch.randn(20, generator=gen, dtype=torch.float64)))
    opt = SFW([{"params": [p], "constraint": region}], lr=0.1, momentum=0.0)
    for _ in range(10):
        g = torch.randn(20, generator=gen, dtype=torch.float64)
        before = p.detach().clone()
        p.grad = g
        opt.step()
        expected = float(g @ before + region.radius * region.dual_norm(g))
        gap = opt.fw_gaps()[0]
        assert gap == pytest.approx(expected, rel=1e-9)
        assert gap >= 0


def test_params_without_grad_are_skipped():
    a, b = torch.nn.Parameter(torch.zeros(3)), torch.nn.Parameter(torch.ones(3))
    opt = SFW([{"params": [a], "constraint": L2Ball((3,), radius=1.0)}, {"params": [b]}])
    a.grad = torch.tensor([1.0, 2.0, 3.0])
    opt.step()
    assert torch.equal(b, torch.ones(3)) and b not in opt.state
    assert not torch.equal(a, torch.zeros(3))
    assert math.isnan(opt.fw_gaps()[1])


def test_closure_is_evaluated_with_grad_and_returned():
    p = torch.nn.Parameter(torch.tensor([0.5, -0.5]))
    opt = SFW([{"params": [p], "constraint": L2Ball((2,), radius=1.0)}], lr=0.1, momentum=0.0, rescale=None)
    calls = []

    def closure():
        opt.zero_grad()
        loss = ((p - torch.tensor([3.0, 0.0])) ** 2).sum()
        loss.backward()
        calls.append(loss.item())
        return loss

    with torch.no_grad():
        loss = opt.step(closure)
    assert loss.requires_grad and calls == [loss.item()] == [pytest.approx(6.5)]
    v = _l2_vertex(torch.tensor([-5.0, -1.0]), 1.0)  # gradient 2(p − target)
    torch.testing.assert_close(p.detach(), 0.9 * torch.tensor([0.5, -0.5]) + 0.1 * v)


def _param(shape=(3,)):
    return torch.nn.Parameter(torch.zeros(shape))


@pytest.mark.parametrize("kwargs,name", [
    (dict(lr=-0.1), "lr"), (dict(lr=float("nan")), "lr"), (dict(lr=float("inf")), "lr"), (dict(lr="0.1"), "lr"),
    (dict(momentum=1.0), "momentum"), (dict(momentum=-0.1), "momentum"), (dict(momentum=True), "momentum"),
    (dict(dampening=1.5), "dampening"), (dict(dampening=-1e-3), "dampening"),
    (dict(rescale="grad"), "rescale"), (dict(rescale=1), "rescale"),
])
def test_bad_hyper_parameters_raise_naming_them(kwargs, name):
    with pytest.raises(ValueError, match=name):
        SFW([_param()], **kwargs)
    with pytest.raises(ValueError, match=name):  # the same check for a per-group override
        SFW([{"params": [_param()], **kwargs}])


def test_bad_constraint_groups_raise():
    with pytest.raises(ValueError, match="exactly one parameter"):
        SFW([{"params": [_param(), _param()], "constraint": L2Ball((3,), radius=1.0)}])
    with pytest.raises(ValueError, match="shape"):
        SFW([{"params": [_param((4,))], "constraint": L2Ball((3,), radius=1.0)}])
    with pytest.raises(ValueError, match="constraint"):
        SFW([{"params": [_param()], "constraint": "l2"}])
    outside = torch.nn.Parameter(torch.full((3,), 2.0))
    with pytest.raises(ValueError, match="Infeasible"):
        SFW([{"params": [outside], "constraint": L2Ball((3,), radius=1.0)}])


def test_add_param_group_validates_and_keeps_state_clean():
    opt = SFW([_param()])
    with pytest.raises(ValueError, match="lr"):
        opt.add_param_group({"params": [_param()], "lr": -1.0})
    assert len(opt.param_groups) == 1
    opt.add_param_group({"params": [_param((2, 2))], "constraint": L2Ball((2, 2), radius=1.0), "lr": 0.5})
    assert opt.param_groups[1]["lr"] == 0.5 and opt.param_groups[1]["momentum"] == 0.9


def test_step_size_vector_equals_the_formula_entry_by_entry():
    """`step_size` over entries of mixed rescales (per-entry flags, as a StepPlan bucket holds them)
    = η = clip(α·s, 0, 1) written out per entry with s of docs/method.md#step-size-rescaling; θ = v
    gives η = 1 (not nan) when α‖m‖ > 0; a masked step gives 0 everywhere."""
    from sparsefw.optim.functional import _USES_NORM, step_size

    rescales = [None, "diameter", "gradient", "fast_gradient", "gradient", "gradient"]
    diameters = [2.0, 4.0, 1.0, 8.0, 1.0, 1.0]
    norms = [0.3, 5.0, 0.2, 0.5, 3.0, 0.7]
    distances = [1.0, 1.0, 0.5, 1.0, 0.0, 7.0]
    lrs = [0.4, 0.1, 0.3, 0.2, 0.1, 0.1]
    expected = []
    for r, d, n, dist, lr in zip(rescales, diameters, norms, distances, lrs):
        s = {None: 1.0, "diameter": 1 / d, "fast_gradient": 2 * n / d,
             "gradient": n / dist if dist else math.inf}[r]
        expected.append(min(max(lr * s, 0.0), 1.0))
    coefficient = torch.tensor([{None: 1.0, "diameter": 1 / d, "fast_gradient": 2 / d, "gradient": 1.0}[r]
                                for r, d in zip(rescales, diameters)], dtype=torch.float64)
    args = (torch.tensor(lrs, dtype=torch.float64), coefficient, torch.tensor(norms, dtype=torch.float64),
            torch.tensor(distances, dtype=torch.float64), torch.tensor([r in _USES_NORM for r in rescales]),
            torch.tensor([r == "gradient" for r in rescales]))
    assert step_size(*args).tolist() == pytest.approx(expected, rel=1e-12)
    assert step_size(*args, ok=torch.tensor(False)).tolist() == [0.0] * len(rescales)
    scalar = step_size(torch.tensor(0.3, dtype=torch.float64), 1.0, torch.tensor(0.2, dtype=torch.float64),
                       torch.tensor(0.5, dtype=torch.float64), True, True)
    assert float(scalar) == pytest.approx(0.3 * 0.2 / 0.5)
    assert float(step_size(torch.tensor(0.5), 1.0, None, None, None, False)) == 0.5     # no norms needed
