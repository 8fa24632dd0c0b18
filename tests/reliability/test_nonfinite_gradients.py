"""A gradient holding nan or ±inf never reaches the weights: SFW skips the whole step (default) or raises.

The truth a skipped step is checked against: a twin optimizer that never saw the bad batch. Both must
end bitwise equal — weights and momentum buffers — so the skip left no trace but its counter.
"""
import copy
import io

import pytest
import torch
from torch import nn

import sparsefw
from sparsefw import SFW

MODES = ["k_support", "k_sparse", "l2", "group_k_support", "spectral_k_support", "nuclear"]
BAD_VALUES = [float("nan"), float("inf"), float("-inf")]


def _cnn():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(2, 6, 3), nn.BatchNorm2d(6), nn.ReLU(), nn.Conv2d(6, 4, 3), nn.ReLU(),
                         nn.Flatten(), nn.Linear(4 * 4 * 4, 3))


def _batch(seed):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(8, 2, 8, 8, generator=gen), torch.randint(0, 3, (8,), generator=gen)


def _backward(model, opt, seed, poison=None):
    """Gradients of one batch; `poison` (value, parameter index) puts one non-finite entry in one gradient."""
    opt.zero_grad()
    x, y = _batch(seed)
    nn.functional.cross_entropy(model(x), y).backward()
    if poison is not None:
        value, index = poison
        list(model.parameters())[index].grad.view(-1)[0] = value


def _state(model, opt):
    return ([p.detach().clone() for p in model.parameters()],
            [opt.state[p]["momentum_buffer"].clone() for p in model.parameters() if p in opt.state])


def _assert_feasible(opt):
    for group in opt.param_groups:
        c = group["constraint"]
        assert float(c.norm(group["params"][0].detach())) <= c.radius * (1 + 1e-5), group["name"]


@pytest.mark.parametrize("mode, value", list(zip(MODES, BAD_VALUES * 2)))
def test_nonfinite_step_is_skipped_for_every_parameter(mode, value):
    model = _cnn()
    twin = copy.deepcopy(model)
    opt = SFW(sparsefw.constrain(model, mode, width=5.0), lr=0.1, momentum=0.9)
    opt_twin = SFW(sparsefw.constrain(twin, mode, width=5.0), lr=0.1, momentum=0.9)
    last = len(list(model.parameters())) - 1
    for seed, poison in [(0, None), (1, None), (2, (value, last)), (3, None)]:
        _backward(model, opt, seed, poison)
        opt.step()
        if poison is None:          # the twin never sees the poisoned batch
            _backward(twin, opt_twin, seed)
            opt_twin.step()
    weights, buffers = _state(model, opt)
    twin_weights, twin_buffers = _state(twin, opt_twin)
    assert all(torch.equal(a, b) for a, b in zip(weights, twin_weights))
    assert len(buffers) == len(twin_buffers) and all(torch.equal(a, b) for a, b in zip(buffers, twin_buffers))
    assert opt.nonfinite_steps == 1 and opt_twin.nonfinite_steps == 0
    assert all(torch.isfinite(w).all() for w in weights)
    _assert_feasible(opt)


def test_first_step_skipped_creates_no_momentum_and_reports_no_gap():
    model = _cnn()
    opt = SFW(sparsefw.constrain(model, "k_support", width=5.0), lr=0.1)
    before = [p.detach().clone() for p in model.parameters()]
    _backward(model, opt, 0, (float("nan"), 0))
    opt.step()
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert not any("momentum_buffer" in s for s in opt.state.values())   # none made from the bad gradient
    assert all(g != g for g in opt.fw_gaps())                    # nan: no step, no certificate


def test_raise_mode_names_the_parameter_and_changes_nothing():
    model = _cnn()
    opt = SFW(sparsefw.constrain(model, "group_k_support", width=5.0), lr=0.1, nonfinite="raise")
    _backward(model, opt, 0)
    opt.step()
    weights, buffers = _state(model, opt)
    _backward(model, opt, 1, (float("inf"), 3))                 # parameter 3 = BatchNorm2d bias
    with pytest.raises(FloatingPointError, match=r"non-finite gradient.*'1\.bias' \(param group 3\)"):
        opt.step()
    after_weights, after_buffers = _state(model, opt)
    assert all(torch.equal(a, b) for a, b in zip(weights, after_weights))
    assert all(torch.equal(a, b) for a, b in zip(buffers, after_buffers))


def test_closure_path_skips_too():
    """Lightning calls step(closure): the check runs on the gradients the closure produced."""
    model = _cnn()
    opt = SFW(sparsefw.constrain(model, "l2", width=5.0), lr=0.1)
    before = [p.detach().clone() for p in model.parameters()]
    x, y = _batch(0)

    def closure():
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y) * float("nan")
        loss.backward()
        return loss

    assert torch.isnan(opt.step(closure))
    assert opt.nonfinite_steps == 1
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_counter_survives_a_weights_only_round_trip():
    model = _cnn()
    opt = SFW(sparsefw.constrain(model, "k_sparse", width=5.0), lr=0.1)
    for seed in range(3):
        _backward(model, opt, seed, (float("nan"), 0) if seed else None)
        opt.step()
    buffer = io.BytesIO()
    torch.save(opt.state_dict(), buffer)
    buffer.seek(0)
    fresh = SFW([{"params": [p]} for p in model.parameters()])
    fresh.load_state_dict(torch.load(buffer, weights_only=True))
    assert fresh.nonfinite_steps == opt.nonfinite_steps == 2


def test_huge_finite_gradients_keep_the_iterate_feasible():
    """Finite gradients near float32's range (‖g‖² overflows) are not skipped, and the step stays in C."""
    for mode in ["k_support", "spectral_k_support"]:
        model = _cnn()
        opt = SFW(sparsefw.constrain(model, mode, width=5.0), lr=0.5)
        for seed in range(3):
            _backward(model, opt, seed)
            for p in model.parameters():
                p.grad.mul_(1e30)
            opt.step()
        assert opt.nonfinite_steps == 0
        assert all(torch.isfinite(p).all() for p in model.parameters())
        _assert_feasible(opt)


def test_bad_nonfinite_argument():
    with pytest.raises(ValueError, match="nonfinite='ignore'"):
        SFW([nn.Parameter(torch.zeros(2))], nonfinite="ignore")
