"""The "adam" direction (`sparsefw.optim.adam`): without a region the step is torch's Adam (no weight
decay, β₁ = momentum, β₂ 0.999, ε 1e-8); with a region the LMO takes Adam's direction; the planned
path equals the reference path; state is plain tensors and resumes bitwise; masked steps change nothing."""
import io

import pytest
import torch

from sparsefw import SFW
from sparsefw.constraints import L2Ball, SpectralBall
from sparsefw.optim.adam import adam_directions
from sparsefw.optim.functional import sfw

from side_by_side import step_side_by_side


def _grads(shapes, steps, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [[torch.randn(s, generator=gen, dtype=torch.float64) for s in shapes] for _ in range(steps)]


def test_unconstrained_adam_direction_is_torch_adam():
    a, b = torch.randn(5, 3, dtype=torch.float64), torch.randn(7, dtype=torch.float64)
    ours = [a.clone().requires_grad_(), b.clone().requires_grad_()]
    theirs = [a.clone().requires_grad_(), b.clone().requires_grad_()]
    opt = SFW(ours, lr=0.01, momentum=0.9, direction="adam")
    ref = torch.optim.Adam(theirs, lr=0.01, betas=(0.9, 0.999), eps=1e-8, foreach=False)
    step_side_by_side(ours, theirs, opt, ref, _grads([a.shape, b.shape], 6))
    for p, q in zip(ours, theirs):
        torch.testing.assert_close(p, q, rtol=1e-12, atol=1e-14)


def test_constrained_adam_direction_feeds_the_lmo():
    region = SpectralBall((4, 6), radius=1.0)
    w = torch.nn.Parameter(torch.zeros(4, 6, dtype=torch.float64))
    opt = SFW([{"params": [w], "constraint": region, "direction": "adam"}], lr=0.1, rescale=None, momentum=0.9)
    theta, state = torch.zeros(4, 6, dtype=torch.float64), {}
    for (g,) in _grads([(4, 6)], 4):
        w.grad = g.clone()
        opt.step()
        d = adam_directions([g], [state], [0.9])[0]
        theta = 0.9 * theta + 0.1 * region.lmo(d)
    torch.testing.assert_close(w.detach(), theta, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("masked", [False, True])
def test_planned_path_equals_reference_path(masked):
    regions = [None, L2Ball((5,), 2.0), SpectralBall((6, 4), 1.0), None]
    shapes = [(3,), (5,), (6, 4), (2, 2)]
    kinds = ["adam", "adam", "adam", "momentum"]

    def run(foreach):
        params = [0.01 * torch.ones(s, dtype=torch.float64) for s in shapes]
        buffers, states = [None] * 4, [{} for _ in shapes]
        for t, grads in enumerate(_grads(shapes, 5)):
            sfw(params, grads, buffers, regions, lrs=[0.01, 0.1, 0.05, 0.1], momentums=[0.9] * 4,
                dampenings=[0.0] * 4, rescales=[None, "gradient", None, None], states=states, directions=kinds,
                ok=torch.tensor(t != 1) if masked else None, foreach=foreach)
        return params, states
    (p_ref, s_ref), (p, s) = run(False), run(None)
    for a, b in zip(p_ref, p):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-15)
    assert float(s[0]["step"]) == (4 if masked else 5)


def test_state_is_plain_tensors_and_resume_is_bitwise():
    def make():
        torch.manual_seed(0)
        return torch.nn.Linear(4, 3).double()
    model, grads = make(), _grads([(3, 4), (3,)], 6)
    opt = SFW([{"params": [model.weight], "constraint": SpectralBall((3, 4), 3.0), "rescale": None, "lr": 0.05},
               {"params": [model.bias], "lr": 0.01}], direction="adam")
    for g in grads[:3]:
        model.weight.grad, model.bias.grad = g[0].clone(), g[1].clone()
        opt.step()
    buffer = io.BytesIO()
    torch.save(opt.state_dict(), buffer)
    buffer.seek(0)
    saved, weights = torch.load(buffer, weights_only=True), {k: v.clone() for k, v in model.state_dict().items()}
    assert all(isinstance(v, (torch.Tensor, int, float)) for st in saved["state"].values() for v in st.values())
    other = make()
    other.load_state_dict(weights)
    opt2 = SFW([{"params": [other.weight], "constraint": SpectralBall((3, 4), 3.0), "rescale": None, "lr": 0.05},
                {"params": [other.bias], "lr": 0.01}], direction="adam")
    opt2.load_state_dict(saved)
    for g in grads[3:]:
        for m, o in ((model, opt), (other, opt2)):
            m.weight.grad, m.bias.grad = g[0].clone(), g[1].clone()
            o.step()
    assert torch.equal(model.weight, other.weight) and torch.equal(model.bias, other.bias)


def test_bad_direction_raises():
    with pytest.raises(ValueError, match="direction"):
        SFW([torch.nn.Parameter(torch.zeros(2))], direction="adagrad")
