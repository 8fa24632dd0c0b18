"""SFW with torch's machinery: schedulers, GradScaler, state_dict round trips and exact resumption."""
import copy
import io
import math

import pytest
import torch
from torch import nn

import sparsefw
from sparsefw import SFW
from sparsefw.constraints import Constraint, L2Ball
from tiny_training import random_batches, small_cnn, train


def test_step_lr_scheduler_changes_the_step():
    """Momentum 0, rescale None: θ ← (1−α)θ + α·v, so α is readable from the update."""
    p = nn.Parameter(torch.tensor([0.3, 0.4], dtype=torch.float64))
    opt = SFW([{"params": [p], "constraint": L2Ball((2,), radius=1.0)}], lr=0.4, momentum=0.0, rescale=None)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    g = torch.tensor([1.0, 0.0], dtype=torch.float64)
    used = []
    for _ in range(5):
        before = p.detach().clone()
        p.grad = g.clone()
        opt.step()
        sched.step()
        v = torch.tensor([-1.0, 0.0], dtype=torch.float64)
        used.append(float((p.detach() - before)[1] / (v - before)[1]))
    assert used == pytest.approx([0.4, 0.4, 0.2, 0.2, 0.1], rel=1e-12)


def test_grad_scaler_unscales_and_skips_infinite_steps():
    assert torch.amp.GradScaler("cpu").is_enabled()  # the CPU scaler exists in this torch
    model = small_cnn(6, 8, 5)
    groups = sparsefw.constrain(model, "k_support", k=0.2, width=5.0)
    twin = copy.deepcopy(model)
    opt = SFW(groups, lr=0.1)
    opt_twin = SFW(sparsefw.constrain(twin, "k_support", k=0.2, width=5.0), lr=0.1)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 12)
    for x, y in random_batches(3, 5):
        opt.zero_grad()
        scaler.scale(nn.functional.cross_entropy(model(x), y)).backward()
        scaler.step(opt)
        scaler.update()
        opt_twin.zero_grad()
        nn.functional.cross_entropy(twin(x), y).backward()
        opt_twin.step()
    for a, b in zip(model.parameters(), twin.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    # an overflowing gradient: the scaler skips the step and halves its scale
    before = [p.detach().clone() for p in model.parameters()]
    opt.zero_grad()
    x, y = random_batches(1, 5, seed=5)[0]
    scaler.scale(nn.functional.cross_entropy(model(x), y) * float("inf")).backward()
    scale = scaler.get_scale()
    scaler.step(opt)
    scaler.update()
    assert scaler.get_scale() == scale / 2
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


def _assert_plain(obj, path="state_dict"):
    if isinstance(obj, dict):
        for key, value in obj.items():
            assert isinstance(key, (str, int)), f"{path} has key {key!r}"
            _assert_plain(value, f"{path}[{key!r}]")
    elif isinstance(obj, (list, tuple)):
        for i, value in enumerate(obj):
            _assert_plain(value, f"{path}[{i}]")
    else:
        assert obj is None or isinstance(obj, (str, int, float, bool, torch.Tensor)), f"{path} is {type(obj)}"


@pytest.mark.parametrize("mode", ["k_support", "group_k_support", "spectral_k_support", "k_sparse"])
def test_resume_from_weights_only_checkpoint_is_bit_identical(mode):
    model = small_cnn(6, 8, 5)
    opt = SFW(sparsefw.constrain(model, mode, width=5.0), lr=0.05, momentum=0.9)
    batches = random_batches(7, 5)
    train(model, opt, batches[:3])

    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, buffer)
    buffer.seek(0)
    checkpoint = torch.load(buffer, weights_only=True)
    _assert_plain(checkpoint["opt"])
    resumed = small_cnn(6, 8, 5)
    resumed.load_state_dict(checkpoint["model"])
    resumed_opt = SFW([{"params": [p]} for p in resumed.parameters()])  # groups come from the checkpoint
    resumed_opt.load_state_dict(checkpoint["opt"])
    for group, original in zip(resumed_opt.param_groups, opt.param_groups):
        assert isinstance(group["constraint"], Constraint)
        assert group["constraint"].to_spec() == original["constraint"].to_spec()
        assert group["name"] == original["name"]

    train(model, opt, batches[3:])
    train(resumed, resumed_opt, batches[3:])
    for (name, a), b in zip(model.named_parameters(), resumed.parameters()):
        assert torch.equal(a, b), name
    assert resumed_opt.fw_gaps() == opt.fw_gaps()


def test_state_dict_does_not_alter_the_live_groups():
    model = small_cnn(6, 8, 5)
    opt = SFW(sparsefw.constrain(model, "l2"))
    state = opt.state_dict()
    assert all(isinstance(g["constraint"], dict) for g in state["param_groups"])
    assert all(isinstance(g["constraint"], Constraint) for g in opt.param_groups)


def test_load_state_dict_checks_the_regions_fit():
    p = nn.Parameter(torch.zeros(3))
    opt = SFW([{"params": [p], "constraint": L2Ball((3,), radius=1.0)}])
    state = opt.state_dict()
    other = SFW([{"params": [nn.Parameter(torch.full((3,), 5.0))]}])
    with pytest.raises(ValueError, match="Infeasible"):
        other.load_state_dict(state)


def test_fw_gaps_before_any_step_are_nan():
    opt = SFW(sparsefw.constrain(small_cnn(6, 8, 5), "l2"))
    assert all(math.isnan(g) for g in opt.fw_gaps())
