"""Learning-rate factors against their closed forms, and through LambdaLR on a real optimizer."""
import math

import pytest
import torch
from torch.optim.lr_scheduler import LambdaLR

from sparsefw.experiments.schedules import LRFactor


def test_linear_decays_to_zero_at_the_end():
    f = LRFactor("linear", total_iters=100, iters_per_epoch=10)
    assert f(0) == 1.0
    assert f(25) == pytest.approx(0.75)
    assert f(99) == pytest.approx(0.01)
    assert f(100) == 0.0


def test_cosine_midpoint_is_half_and_end_is_zero():
    f = LRFactor("cosine", total_iters=200, iters_per_epoch=10)
    assert f(0) == pytest.approx(1.0)
    assert f(100) == pytest.approx(0.5)
    assert f(50) == pytest.approx((1 + math.cos(math.pi / 4)) / 2)
    assert f(200) == pytest.approx(0.0, abs=1e-15)


def test_warmup_ramps_linearly_then_schedule_spans_the_rest():
    f = LRFactor("linear", total_iters=100, iters_per_epoch=10, warmup_epochs=2)   # W = 20
    assert [f(i) for i in (0, 9, 19)] == pytest.approx([1 / 20, 10 / 20, 1.0])
    assert f(20) == 1.0
    assert f(60) == pytest.approx(0.5)   # halfway through the remaining 80 iterations
    assert f(100) == 0.0


def test_step_multistep_exponential_constant():
    step = LRFactor("step", 100, 10, step_size=3, gamma=0.5)               # every 30 iterations
    assert [step(i) for i in (0, 29, 30, 59, 60, 99)] == pytest.approx([1, 1, .5, .5, .25, .125])
    multi = LRFactor("multistep", 100, 10, milestones=[5, 8], gamma=0.1)
    assert [multi(i) for i in (49, 50, 79, 80)] == pytest.approx([1, .1, .1, .01])
    expo = LRFactor("exponential", 100, 10, gamma=0.9)
    assert expo(10) == pytest.approx(0.9) and expo(25) == pytest.approx(0.9 ** 2.5)
    assert LRFactor("constant", 100, 10)(77) == 1.0


def test_lambdalr_steps_per_iteration_and_state_loads_weights_only(tmp_path):
    p = torch.nn.Parameter(torch.zeros(3))
    opt = torch.optim.SGD([p], lr=0.2)
    sched = LambdaLR(opt, LRFactor("cosine", total_iters=10, iters_per_epoch=5, warmup_epochs=1))
    seen = []
    for _ in range(10):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    warm = [0.2 * (i + 1) / 5 for i in range(5)]
    cos = [0.2 * (1 + math.cos(math.pi * t / 5)) / 2 for t in range(5)]
    assert seen == pytest.approx(warm + cos)
    torch.save(sched.state_dict(), tmp_path / "s.pt")
    state = torch.load(tmp_path / "s.pt", weights_only=True)
    fresh = LambdaLR(torch.optim.SGD([p], lr=0.2), LRFactor("constant", 1, 1))
    fresh.load_state_dict(state)
    assert fresh.lr_lambdas[0].name == "cosine" and fresh.last_epoch == 10


@pytest.mark.parametrize("kwargs, word", [
    (dict(name="poly"), "name"), (dict(total_iters=0), "total_iters"),
    (dict(warmup_epochs=10), "warmup_epochs"), (dict(gamma=0.0), "gamma")])
def test_bad_arguments_are_named(kwargs, word):
    args = dict(name="linear", total_iters=100, iters_per_epoch=10) | kwargs
    with pytest.raises(ValueError, match=word):
        LRFactor(**args)
