"""constrain(model, "coupled_group_k_support"): regions over the coupled channel groups."""
import pytest
import torch
import torch.nn.functional as F

import sparsefw
from nets import CifarResNet, PlainCNN, randomize
from sparsefw.compress import channel_groups, remove_filters
from sparsefw.constraints import CoupledGroupKSupportBall, L2Ball


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
    losses = []
    for _ in range(15):
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    for g in groups:
        region = g["constraint"]
        members = region.pack([p.detach() for p in g["params"]]) if isinstance(region, CoupledGroupKSupportBall) \
            else g["params"][0].detach()
        assert float(region.norm(members)) <= region.radius * (1 + 1e-5)
    assert losses[-1] < losses[0]
    assert all(gap >= -1e-4 for gap in opt.fw_gaps())
