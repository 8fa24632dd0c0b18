"""The planned SFW step: the device-masked path equals the flag path, GradScaler's protocol, tensor
learning rates, float32 step sizes for bfloat16 parameters, plan rebuilds, and (on CUDA) no host
synchronisation inside step()."""
import copy

import pytest
import torch
from torch import nn

import sparsefw
from sparsefw import SFW
from sparsefw.constraints import KSupportBall, L2Ball

MODES = ["k_support", "k_sparse", "l2", "group_k_support", "spectral_k_support", "nuclear"]


def _cnn(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(2, 6, 3), nn.BatchNorm2d(6), nn.ReLU(), nn.Conv2d(6, 4, 3), nn.ReLU(),
                         nn.Flatten(), nn.Linear(4 * 4 * 4, 3))


def _batch(seed, device="cpu"):
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(8, 2, 8, 8, generator=gen).to(device), torch.randint(0, 3, (8,), generator=gen).to(device))


def _backward(model, opt, seed, poison=None, scale=1.0):
    opt.zero_grad()
    x, y = _batch(seed, next(model.parameters()).device)
    (scale * nn.functional.cross_entropy(model(x), y)).backward()
    if poison is not None:
        list(model.parameters())[-1].grad.view(-1)[0] = poison


def _weights(model):
    return [p.detach().clone() for p in model.parameters()]


@pytest.mark.parametrize("mode", MODES)
def test_device_masked_path_equals_the_flag_path(mode):
    """`_mask_on_device` runs the CUDA path (gradients sanitised on the device, η and gaps masked,
    nothing read) on the CPU: with a poisoned step in the middle it ends bitwise where the flag path
    (read the flag, return early) ends, with the same count and gaps."""
    model, twin = _cnn(), _cnn()
    opt = SFW(sparsefw.constrain(model, mode, k=0.3, width=5.0), lr=0.1, momentum=0.9)
    masked = SFW(sparsefw.constrain(twin, mode, k=0.3, width=5.0), lr=0.1, momentum=0.9)
    masked._mask_on_device = True
    for seed, poison in [(0, None), (1, None), (2, float("nan")), (3, None), (4, float("inf"))]:
        for m, o in ((model, opt), (twin, masked)):
            _backward(m, o, seed, poison)
            o.step()
        if poison is None:
            assert opt.fw_gaps() == masked.fw_gaps()
        else:
            assert all(g != g for g in masked.fw_gaps())
    assert all(torch.equal(a, b) for a, b in zip(_weights(model), _weights(twin)))
    assert opt.nonfinite_steps == masked.nonfinite_steps == 2


def test_masked_first_step_leaves_weights_and_zero_buffers():
    model = _cnn()
    before = _weights(model)
    opt = SFW(sparsefw.constrain(model, "k_support", width=5.0), lr=0.1)
    opt._mask_on_device = True
    _backward(model, opt, 0, float("nan"))
    opt.step()
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert all(torch.count_nonzero(s["momentum_buffer"]) == 0 for s in opt.state.values())
    assert opt.nonfinite_steps == 1


def _scaled_run(scaler_path, mode="k_support", steps=4):
    """SFW under GradScaler, either through the protocol (scaler.step hands over grad_scale and
    found_inf) or after an explicit scaler.unscale_ (found_inf only)."""
    model = _cnn()
    opt = SFW(sparsefw.constrain(model, mode, k=0.3, width=5.0), lr=0.1)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 10, growth_interval=2)
    scales = []
    for seed in range(steps):
        opt.zero_grad()
        x, y = _batch(seed)
        loss = nn.functional.cross_entropy(model(x), y) * (float("inf") if seed == 2 else 1.0)
        scaler.scale(loss).backward()
        if scaler_path == "unscale_first":
            scaler.unscale_(opt)
        scaler.step(opt)
        scaler.update()
        scales.append(scaler.get_scale())
    return model, opt, scales


@pytest.mark.parametrize("mode", ["k_support", "l2", "spectral_k_support"])
def test_grad_scaler_protocol_equals_unscale_then_step(mode):
    assert SFW._step_supports_amp_scaling
    a, opt_a, scales_a = _scaled_run("protocol", mode)
    b, opt_b, scales_b = _scaled_run("unscale_first", mode)
    assert scales_a == scales_b and scales_a[2] == scales_a[1] / 2      # the inf step halved the scale
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters()))
    assert opt_a.nonfinite_steps == opt_b.nonfinite_steps == 0          # the scaler's skip is its own


def test_grad_scaler_protocol_unscales_by_the_scalers_reciprocal():
    """Through the protocol the step sees exactly grad·(1/scale) in float32, as after unscale_."""
    model, twin = _cnn(), _cnn()
    opt = SFW(sparsefw.constrain(model, "k_support", k=0.3, width=5.0), lr=0.1)
    opt_twin = SFW(sparsefw.constrain(twin, "k_support", k=0.3, width=5.0), lr=0.1)
    scaler = torch.amp.GradScaler("cpu", init_scale=3.0 * 2.0 ** 7)
    for seed in range(3):
        for m, o in ((model, opt), (twin, opt_twin)):
            o.zero_grad()
            x, y = _batch(seed)
            scaler.scale(nn.functional.cross_entropy(m(x), y)).backward()
        scaler.step(opt)
        inverse = scaler.get_scale() and torch.tensor(scaler.get_scale()).double().reciprocal().float()
        for p in twin.parameters():
            p.grad.mul_(inverse)
        opt_twin.step()
        scaler.update()
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), twin.parameters()))


@pytest.mark.parametrize("mode", ["k_support", "l2", "group_k_support"])
def test_tensor_lr_equals_float_lr_under_a_scheduler(mode):
    model, twin = _cnn(), _cnn()
    groups = sparsefw.constrain(model, mode, k=0.3, width=5.0)
    groups.append({"params": [nn.Parameter(torch.ones(3))], "constraint": None})    # an SGD group
    twin_groups = sparsefw.constrain(twin, mode, k=0.3, width=5.0)
    twin_groups.append({"params": [nn.Parameter(torch.ones(3))], "constraint": None})
    opt = SFW(groups, lr=0.2, momentum=0.9)
    opt_t = SFW(twin_groups, lr=torch.tensor(0.2), momentum=0.9)
    assert all(isinstance(g["lr"], torch.Tensor) for g in opt_t.param_groups)
    scheds = [torch.optim.lr_scheduler.StepLR(o, step_size=1, gamma=0.5) for o in (opt, opt_t)]
    for seed in range(4):
        for m, o, extra in ((model, opt, groups[-1]), (twin, opt_t, twin_groups[-1])):
            _backward(m, o, seed)
            extra["params"][0].grad = torch.full((3,), 0.5)
            o.step()
        for s in scheds:
            s.step()
    assert float(opt_t.param_groups[0]["lr"]) == pytest.approx(opt.param_groups[0]["lr"], rel=1e-7)
    assert opt.param_groups[0]["lr"] == 0.2 * 0.5 ** 4
    for a, b in zip([*model.parameters(), groups[-1]["params"][0]], [*twin.parameters(), twin_groups[-1]["params"][0]]):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("lr, name", [(torch.tensor([0.1, 0.2]), "1-element"), (torch.tensor(-0.1), "lr"),
                                      (torch.tensor(1), "floating-point"), (torch.tensor(float("nan")), "lr")])
def test_bad_tensor_lr_raises(lr, name):
    with pytest.raises(ValueError, match=name):
        SFW([nn.Parameter(torch.zeros(2))], lr=lr)


@pytest.mark.parametrize("region", ["l2", "k_support"])
def test_bfloat16_small_step_is_computed_in_float32_and_rounded_once(region):
    """θ ← θ − η·(θ − v) with the gradient-rescaled η = α‖m‖/‖θ−v‖ ≈ 1e-3: η, Δ and the update are
    computed in float32 from the bfloat16 values and rounded once, as the float64 reference from the
    same start does (an η rounded to bfloat16 is off by up to 0.4 %, which moves other entries)."""
    gen = torch.Generator().manual_seed(0)
    n, radius, lr = 4000, 4.0, 1e-4
    c = L2Ball((n,), radius=radius) if region == "l2" else KSupportBall((n,), k=400, radius=radius)
    start = c.shift_inside(torch.randn(n, generator=gen) * 0.05).bfloat16()
    grad = torch.randn(n, generator=gen).bfloat16()
    p = nn.Parameter(start.clone())
    opt = SFW([{"params": [p], "constraint": c}], lr=lr, momentum=0.0, rescale="gradient")
    p.grad = grad.clone()
    opt.step()
    v = c.lmo(grad.double())
    eta = lr * grad.double().norm() / (start.double() - v).norm()
    expected = (start.double() - eta * (start.double() - v)).bfloat16()
    assert p.dtype == torch.bfloat16
    moved = expected != start
    assert moved.sum() > 100                                   # the step is resolvable in bfloat16
    assert (p.detach() == expected).float().mean() > 0.99      # rounded once, as the float64 maths
    assert ((p.detach() != start) == moved).float().mean() > 0.99
    gap = opt.fw_gaps()[0]
    assert gap == pytest.approx(float(grad.double() @ (start.double() - v)), rel=1e-3)


def test_plan_is_rebuilt_when_groups_change():
    model = _cnn()
    opt = SFW(sparsefw.constrain(model, "l2", width=5.0), lr=0.1, momentum=0.9)
    _backward(model, opt, 0)
    opt.step()
    plan = opt._plans[next(iter(opt._plans))][0]
    _backward(model, opt, 1)
    opt.step()
    assert opt._plans[next(iter(opt._plans))][0] is plan          # reused
    opt.param_groups[0]["momentum"] = 0.0                         # a structural change
    _backward(model, opt, 2)
    before = _weights(model)
    opt.step()
    assert opt._plans[next(iter(opt._plans))][0] is not plan
    # the group now steps without momentum: its update uses this gradient only
    g = list(model.parameters())[0].grad
    c = opt.param_groups[0]["constraint"]
    v = c.lmo(g)
    diff = before[0] - v
    eta = min(0.1 * float(g.norm()) / float(diff.norm()), 1.0)
    torch.testing.assert_close(list(model.parameters())[0].detach(), before[0] - eta * diff, rtol=1e-5, atol=1e-6)
    model[0].weight.grad = None                                   # a parameter without gradient
    model[0].bias.grad = torch.zeros_like(model[0].bias)
    kept = model[0].weight.detach().clone()
    opt.step()
    assert torch.equal(model[0].weight, kept)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("mode", ["l2", "k_support", "k_sparse", "group_k_support"])
@pytest.mark.parametrize("scaler", [False, True])
def test_cuda_step_does_not_synchronise(mode, scaler):
    """After the first step, step() neither synchronises nor copies from the host, with or without
    GradScaler, through a non-finite step (masked on the device)."""
    model = _cnn().cuda()
    opt = SFW(sparsefw.constrain(model, mode, k=0.3, width=5.0), lr=0.1, momentum=0.9)
    grad_scaler = torch.amp.GradScaler("cuda") if scaler else None
    reference = copy.deepcopy(model).cpu()
    for seed in range(3):
        opt.zero_grad()
        x, y = _batch(seed, "cuda")
        loss = nn.functional.cross_entropy(model(x), y)
        (grad_scaler.scale(loss) if scaler else loss).backward()
        if seed == 1:
            list(model.parameters())[-1].grad.view(-1)[0] = float("nan")
        torch.cuda.synchronize()
        if seed > 0:                 # the first step builds the plan (its one host-to-device copy)
            torch.cuda.set_sync_debug_mode("error")
        try:
            if scaler:
                grad_scaler.step(opt)
            else:
                opt.step()
        finally:
            torch.cuda.set_sync_debug_mode("default")
        if scaler:
            grad_scaler.update()
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert opt.nonfinite_steps == (0 if scaler else 1)
    assert not all(torch.equal(a.cpu(), b) for a, b in zip(model.parameters(), reference.parameters()))
