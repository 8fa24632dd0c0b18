"""constrain(model, "coupled_group_k_support"): regions over the coupled channel groups."""
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import sparsefw
from nets import CifarResNet, PlainCNN, randomize
from sparsefw.compress import channel_groups, remove_filters
from sparsefw.constraints import CoupledGroupKSupportBall, L2Ball

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "optim"))
from tiny_training import train  # noqa: E402


def _bn(prefix):
    return {f"{prefix}.weight", f"{prefix}.bias"}


def _resnet():
    torch.manual_seed(0)
    return CifarResNet(blocks=1, width=8)


def test_regions_are_the_output_sides_of_the_coupled_spaces():
    model = _resnet()
    x = torch.randn(2, 3, 16, 16)
    groups = sparsefw.constrain(model, "coupled_group_k_support", k=0.5, width=10.0, example_inputs=x)
    coupled = sorted(sorted(p for p in g["name"].split("+")) for g in groups
                     if isinstance(g["constraint"], CoupledGroupKSupportBall))
    # by hand: the stem's stream joins block 0's output (identity shortcut); blocks 1, 2 join their
    # projection shortcut; every block's first conv writes a space of its own; fc writes the output
    expected = [{"conv1.weight", "layers.0.conv2.weight"} | _bn("bn1") | _bn("layers.0.bn2")]
    expected += [{f"layers.{b}.conv1.weight"} | _bn(f"layers.{b}.bn1") for b in range(3)]
    expected += [{f"layers.{b}.conv2.weight", f"layers.{b}.shortcut.0.weight"} | _bn(f"layers.{b}.bn2")
                 | _bn(f"layers.{b}.shortcut.1") for b in (1, 2)]
    assert coupled == sorted(sorted(s) for s in expected)
    # every trainable parameter in exactly one group; the rest are L2 balls
    names = [n for g in groups for n in g["name"].split("+")]
    assert sorted(names) == sorted(n for n, _ in model.named_parameters())
    assert all(isinstance(g["constraint"], L2Ball) for g in groups if g["name"] in ("fc.weight", "fc.bias"))
    # the regions' channel counts are the spaces' sizes (4 shrinkable spaces of 8, 16, 32 channels…)
    sizes = sorted(g["constraint"].channels for g in groups if isinstance(g["constraint"], CoupledGroupKSupportBall))
    assert sizes == sorted(s.size for s in channel_groups(model, x))


def test_needs_example_inputs():
    with pytest.raises(ValueError, match="example_inputs"):
        sparsefw.constrain(_resnet(), "coupled_group_k_support", k=0.5)


def test_vertices_zero_whole_channels_so_coupled_removal_is_exact():
    """At a vertex of every region (k = 4 of 8/16/32 channels kept), removing ⌊C/2⌋… channels of
    every space by joint norm removes exactly the zero channels: the output does not change."""
    model = randomize(_resnet()).double()
    x = torch.randn(3, 3, 16, 16, dtype=torch.float64)
    groups = sparsefw.constrain(model, "coupled_group_k_support", k=0.5, width=10.0, example_inputs=x)
    torch.manual_seed(1)
    with torch.no_grad():
        for g in groups:
            region = g["constraint"]
            if isinstance(region, CoupledGroupKSupportBall):
                vertex = region.lmo(torch.randn(region.n, dtype=torch.float64))
                for p, v in zip(g["params"], region.unpack(vertex)):
                    p.copy_(v)
    reference = model(x)
    removed = remove_filters(model, amount=0.5, example_inputs=x, criterion="l2", coupled=True)
    assert sum(p.numel() for p in removed.parameters()) < sum(p.numel() for p in model.parameters()) * 0.4
    torch.testing.assert_close(removed(x), reference, rtol=1e-9, atol=1e-9)


def test_sfw_training_stays_feasible_on_every_group():
    torch.manual_seed(0)
    model = PlainCNN(spatial=8)
    x, y = torch.randn(16, 3, 8, 8), torch.randint(0, 5, (16,))
    groups = sparsefw.constrain(model, "coupled_group_k_support", k=0.5, width=5.0, example_inputs=x[:2])
    opt = sparsefw.SFW(groups, lr=0.5, momentum=0.9)
    losses = train(model, opt, [(x, y)] * 15)
    for g in groups:
        region = g["constraint"]
        members = region.pack([p.detach() for p in g["params"]]) if isinstance(region, CoupledGroupKSupportBall) \
            else g["params"][0].detach()
        assert float(region.norm(members)) <= region.radius * (1 + 1e-5)
    assert losses[-1] < losses[0]
    assert all(gap >= -1e-4 for gap in opt.fw_gaps())


def test_coupled_group_lasso_penalty_sums_the_joint_norms_of_the_output_sides():
    """λ·Σ over shrinkable spaces and channels of ‖channel c's slices of every output-side member‖,
    computed here from `channel_groups` directly; its gradient at channel c of a member slice w_c is
    λ·w_c / n_c (closed form)."""
    from sparsefw.optim import coupled_group_lasso_penalty
    model = randomize(_resnet())
    x = torch.randn(2, 3, 16, 16)
    groups = sparsefw.constrain(model, "coupled_group_k_support", k=0.5, width=10.0, example_inputs=x)
    state = dict(model.named_parameters())
    expected, norms = 0.0, {}
    for space in channel_groups(model, x):
        squares = torch.zeros(space.size, dtype=torch.float64)
        members = [m for m in space.members if m.parameter and m.role in ("out", "norm", "scale")]
        for m in members:
            picked = state[m.name].detach().double().index_select(m.dim, m.index.flatten())
            squares += picked.movedim(m.dim, 0).reshape(space.size, -1).pow(2).sum(1)
        expected += float(squares.sqrt().sum())
        for m in members:
            norms[m.name] = (m, squares.sqrt())
    penalty = coupled_group_lasso_penalty(groups, 0.3)
    assert penalty.item() == pytest.approx(0.3 * expected, rel=1e-5)
    penalty.backward()
    for name, (m, n) in norms.items():
        shape = [1] * state[name].dim()
        shape[m.dim] = -1
        order = m.index.flatten().argsort()            # channel of each position along m.dim
        per_position = n[order] if m.index.shape[1] == 1 else n.repeat_interleave(m.index.shape[1])[order]
        want = 0.3 * state[name].detach().double() / per_position.view(shape)
        torch.testing.assert_close(state[name].grad.double(), want, rtol=1e-4, atol=1e-7)
    assert coupled_group_lasso_penalty(sparsefw.constrain(model, "l2"), 1.0).item() == 0.0
    with pytest.raises(ValueError, match="lam"):
        coupled_group_lasso_penalty(groups, -1.0)


def test_coupled_regions_get_their_width_and_fixed_step():
    """Radius = coupled_width · √(Σ_m E‖θ_m^init‖²) over the members; every coupled group carries
    lr = coupled_step and rescale None (defaults from assign_coupled), after the single-tensor groups;
    coupled_step="optimizer" leaves lr and rescale to the optimizer."""
    from sparsefw.assign_coupled import DEFAULT_COUPLED_STEP, DEFAULT_COUPLED_WIDTH
    from sparsefw.radii import expected_init_norms
    x = torch.randn(2, 3, 16, 16)
    norms = expected_init_norms(_resnet())
    for width, step in ((None, None), (6.0, 0.05), (1.5, "optimizer")):
        groups = sparsefw.constrain(_resnet(), "coupled_group_k_support", example_inputs=x, coupled_width=width,
                                    coupled_step=step)
        joint = [g for g in groups if isinstance(g["constraint"], CoupledGroupKSupportBall)]
        assert groups[-len(joint):] == joint
        for g in joint:
            names = g["name"].split("+")
            want = (width or DEFAULT_COUPLED_WIDTH) * sum(norms[n] ** 2 for n in names) ** 0.5
            assert g["constraint"].radius == pytest.approx(want, rel=1e-12)
            if step == "optimizer":
                assert "lr" not in g and "rescale" not in g
            else:
                assert g["lr"] == (step or DEFAULT_COUPLED_STEP) and g["rescale"] is None


def test_a_coupled_group_takes_the_fixed_frank_wolfe_step():
    """One SFW step from θ with momentum 0: every coupled region moves to (1 − η)θ + η·LMO(g) with
    η = coupled_step exactly, while a single-tensor group follows the optimizer's gradient rescaling
    η = clip(lr·‖g‖/‖θ − v‖, 0, 1)."""
    model = randomize(_resnet()).double()
    x = torch.randn(4, 3, 16, 16, dtype=torch.float64)
    groups = sparsefw.constrain(model, "coupled_group_k_support", k=0.5, example_inputs=x[:2], coupled_step=0.05)
    opt = sparsefw.SFW(groups, lr=0.3, momentum=0.0)
    F.cross_entropy(model(x), torch.tensor([0, 1, 2, 3])).backward()
    before = [[p.detach().clone() for p in g["params"]] for g in groups]
    grads = [[p.grad.clone() for p in g["params"]] for g in groups]
    opt.step()
    for g, theta, grad in zip(groups, before, grads):
        region = g["constraint"]
        if isinstance(region, CoupledGroupKSupportBall):
            packed, direction, eta = region.pack(theta), region.pack(grad), 0.05
            v = region.lmo(direction)
        else:
            packed, direction = theta[0], grad[0]
            v = region.lmo(direction)
            eta = min(1.0, 0.3 * float(direction.norm() / (packed - v).norm()))
        after = region.pack([p.detach() for p in g["params"]]) if isinstance(region, CoupledGroupKSupportBall) \
            else g["params"][0].detach()
        torch.testing.assert_close(after, (1 - eta) * packed + eta * v, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("kwargs, words", [
    ({"coupled_width": 0.0}, "coupled_width must be a positive"),
    ({"coupled_step": 1.5}, "coupled_step must be a Frank-Wolfe step"),
    ({"coupled_step": "gradient"}, "coupled_step must be"),
])
def test_bad_coupled_options(kwargs, words):
    with pytest.raises(ValueError, match=words):
        sparsefw.constrain(_resnet(), "coupled_group_k_support", example_inputs=torch.randn(2, 3, 16, 16), **kwargs)
    with pytest.raises(ValueError, match="applies to mode 'coupled_group_k_support' only"):
        sparsefw.constrain(_resnet(), "group_k_support", coupled_width=3.0)
