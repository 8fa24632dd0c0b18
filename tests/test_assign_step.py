"""`constrain`'s step rule: the fixed Frank-Wolfe step on exactly the parameters whose scale the model
ignores, the optimizer's step elsewhere."""
import pytest
import torch
import torch.nn.functional as F

import sparsefw
from sparsefw.assign_step import DEFAULT_FIXED_STEP
from sparsefw.graph.scale import scale_invariant_parameters
from sparsefw.models import build_model


def _cnn():
    torch.manual_seed(0)
    return build_model("cnn", 4, 1, widths=[4, 4, 8, 8])


def _x(n=2, dtype=torch.float32):
    return torch.randn(n, 1, 8, 8, generator=torch.Generator().manual_seed(1), dtype=dtype)


@pytest.mark.parametrize("mode", ["k_support", "group_k_support", "spectral_k_support", "l2"])
@pytest.mark.parametrize("fixed_step", [None, 0.05])
def test_the_fixed_step_goes_to_the_scale_invariant_parameters_only(mode, fixed_step):
    model = _cnn()
    invariant = scale_invariant_parameters(model, _x())
    assert invariant and len(invariant) < len(list(model.parameters()))
    groups = sparsefw.constrain(model, mode, example_inputs=_x(), fixed_step=fixed_step)
    for g in groups:
        if g["name"] in invariant:
            assert g["lr"] == (fixed_step or DEFAULT_FIXED_STEP) and g["rescale"] is None
        else:
            assert "lr" not in g and "rescale" not in g


def test_optimizer_or_no_example_inputs_leave_every_group_to_the_optimizer():
    groups = sparsefw.constrain(_cnn(), "k_support", example_inputs=_x(), fixed_step="optimizer")
    assert not any("lr" in g or "rescale" in g for g in groups)
    with pytest.warns(UserWarning, match="example_inputs"):
        groups = sparsefw.constrain(_cnn(), "k_support")
    assert not any("lr" in g or "rescale" in g for g in groups)


@pytest.mark.parametrize("bad", [0.0, 1.5, -0.1, True, "gradient", float("nan")])
def test_bad_fixed_step_raises_naming_it(bad):
    with pytest.raises(ValueError, match="fixed_step must be a Frank-Wolfe step"):
        sparsefw.constrain(_cnn(), "k_support", example_inputs=_x(), fixed_step=bad)


def test_one_step_moves_fixed_groups_by_eta_and_the_others_by_the_rescaled_step():
    """From θ with momentum 0: a fixed group moves to (1 − η)θ + η·LMO(g) with η = fixed_step, every
    other group by η = clip(lr·‖g‖/‖θ − v‖, 0, 1)."""
    model = _cnn().double()
    x = _x(4, torch.float64)
    groups = sparsefw.constrain(model, "k_support", example_inputs=x[:2], fixed_step=0.05)
    opt = sparsefw.SFW(groups, lr=0.3, momentum=0.0)
    F.cross_entropy(model(x), torch.tensor([0, 1, 2, 3])).backward()
    before = [g["params"][0].detach().clone() for g in groups]
    grads = [g["params"][0].grad.clone() for g in groups]
    opt.step()
    fixed = 0
    for g, theta, grad in zip(groups, before, grads):
        v = g["constraint"].lmo(grad)
        if g.get("rescale", "gradient") is None:
            eta, fixed = 0.05, fixed + 1
        else:
            eta = min(1.0, 0.3 * float(grad.norm() / (theta - v).norm()))
        torch.testing.assert_close(g["params"][0].detach(), (1 - eta) * theta + eta * v, rtol=1e-10, atol=1e-12)
    assert fixed == len(scale_invariant_parameters(model, x[:2]))


def test_a_model_torch_export_cannot_capture_keeps_the_optimizers_step_with_a_warning():
    class DataDependent(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.bn = torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4)

        def forward(self, x):
            return self.bn(self.conv(x)) if x.sum() > 0 else x

    with pytest.warns(UserWarning, match="could not capture DataDependent"):
        groups = sparsefw.constrain(DataDependent(), "k_support", example_inputs=_x().abs())
    assert len(groups) == 4 and not any("lr" in g or "rescale" in g for g in groups)
