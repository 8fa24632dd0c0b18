"""SFW with a region over several parameters (CoupledGroupKSupportBall)."""
import io

import pytest
import torch

from sparsefw import SFW
from sparsefw.constraints import CoupledGroupKSupportBall, GroupKSupportBall


def _members(seed=0, dtype=torch.float64):
    torch.manual_seed(seed)
    conv = torch.nn.Parameter(0.1 * torch.randn(4, 2, 3, dtype=dtype))
    bias = torch.nn.Parameter(0.1 * torch.randn(4, dtype=dtype))
    reader = torch.nn.Parameter(0.1 * torch.randn(3, 8, dtype=dtype))     # 2 columns per channel
    region = CoupledGroupKSupportBall([(4, 2, 3), (4,), (3, 8)], [0, 0, 1],
                                      [[[c] for c in range(4)]] * 2 + [[[2 * c, 2 * c + 1] for c in range(4)]],
                                      k=2, radius=1.0, weights=[1.0, 2.0, 0.5])
    return [conv, bias, reader], region


def _loss(params, step):
    torch.manual_seed(100 + step)
    return sum((p * torch.randn_like(p)).sum() + (p ** 2).sum() for p in params)


def _train(opt, params, steps, start=0):
    for t in range(start, start + steps):
        opt.zero_grad()
        _loss(params, t).backward()
        opt.step()


def test_joint_step_is_the_frank_wolfe_step_on_the_packed_vector():
    params, region = _members()
    free = torch.nn.Parameter(torch.randn(5, dtype=torch.float64))
    opt = SFW([{"params": params, "constraint": region}, {"params": [free]}], lr=0.3, momentum=0.5)
    theta = region.pack([p.detach() for p in params]).clone()
    m = None
    for t in range(4):
        opt.zero_grad()
        _loss(params, t).backward()
        g = region.pack([p.grad for p in params])
        m = g.clone() if m is None else 0.5 * m + g
        diff = theta - region.lmo(m)
        eta = min(1.0, 0.3 * float(m.norm()) / float(diff.norm()))
        theta = theta - eta * diff
        opt.step()
        torch.testing.assert_close(region.pack([p.detach() for p in params]), theta, rtol=1e-12, atol=1e-12)
        assert opt.fw_gaps()[0] == pytest.approx(float(m @ diff), rel=1e-10)
        assert float(region.norm(theta)) <= region.radius * (1 + 1e-9)


def test_single_member_matches_the_single_tensor_region():
    torch.manual_seed(0)
    a = torch.nn.Parameter(0.1 * torch.randn(5, 3, dtype=torch.float64))
    b = torch.nn.Parameter(a.detach().clone())
    coupled = CoupledGroupKSupportBall([(5, 3)], [0], [[[c] for c in range(5)]], k=2, radius=1.0)
    opt_a = SFW([{"params": [a], "constraint": coupled}], lr=0.2)
    opt_b = SFW([{"params": [b], "constraint": GroupKSupportBall((5, 3), k=2, radius=1.0)}], lr=0.2)
    _train(opt_a, [a], 5)
    _train(opt_b, [b], 5)
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-13)


def test_state_dict_is_plain_data_and_resume_is_bitwise():
    params, region = _members(dtype=torch.float32)
    opt = SFW([{"params": params, "constraint": region}], lr=0.2)
    _train(opt, params, 3)
    buffer = io.BytesIO()
    torch.save({"opt": opt.state_dict(), "params": [p.detach().clone() for p in params]}, buffer)
    _train(opt, params, 3, start=3)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    resumed = [torch.nn.Parameter(t) for t in saved["params"]]
    _, fresh_region = _members(dtype=torch.float32)
    opt2 = SFW([{"params": resumed, "constraint": fresh_region}], lr=0.2)
    opt2.load_state_dict(saved["opt"])
    _train(opt2, resumed, 3, start=3)
    for p, q in zip(params, resumed):
        assert torch.equal(p, q)


def test_wrong_members_or_infeasible_start_raise():
    params, region = _members()
    with pytest.raises(ValueError, match="shapes"):
        SFW([{"params": params[:2], "constraint": region}])
    with torch.no_grad():
        params[0].mul_(100)
    with pytest.raises(ValueError, match="Infeasible"):
        SFW([{"params": params, "constraint": region}])


def test_nonfinite_gradient_skips_the_joint_group_too():
    params, region = _members()
    opt = SFW([{"params": params, "constraint": region}], lr=0.2)
    before = [p.detach().clone() for p in params]
    _loss(params, 0).backward()
    params[2].grad[0, 0] = float("nan")
    opt.step()
    assert opt.nonfinite_steps == 1
    assert all(torch.equal(p, q) for p, q in zip(params, before))


def test_device_masked_path_equals_the_flag_path():
    """The on-device masking (CUDA's path, forced on the CPU) gives the flag path's weights,
    including a skipped non-finite step."""
    runs = []
    for masked in (False, True):
        params, region = _members()
        opt = SFW([{"params": params, "constraint": region}], lr=0.2, momentum=0.5)
        opt._mask_on_device = masked
        for t in range(4):
            opt.zero_grad()
            _loss(params, t).backward()
            if t == 2:
                params[1].grad[0] = float("inf")
            opt.step()
        assert opt.nonfinite_steps == 1
        runs.append([p.detach().clone() for p in params])
    for a, b in zip(*runs):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)
