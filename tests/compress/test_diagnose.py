"""`compress.diagnose` on hand-set models whose answers are known by construction."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from sparsefw import compress


class ConvBNNet(nn.Module):
    """conv(1→4, 1×1) → BN(4) → ReLU → conv(4→2, 1×1) → GAP → Linear(2→3); the second conv has no BN."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 2, 1, bias=False)
        self.fc = nn.Linear(2, 3, bias=False)

    def forward(self, x):
        x = self.conv2(torch.relu(self.bn1(self.conv1(x))))
        return self.fc(x.mean((2, 3)))


def hand_set() -> ConvBNNet:
    net = ConvBNNet()
    with torch.no_grad():
        # filter norms 4, 0.2, 3, 0.1: filters 1 and 3 are shrunken (< 0.1 · 4 = 0.4)
        net.conv1.weight.copy_(torch.tensor([4.0, 0.2, 3.0, 0.1]).view(4, 1, 1, 1))
        # γ: filter 1 alive (0.9 ≥ 0.1 · 1), filter 3 switched off (0.01)
        net.bn1.weight.copy_(torch.tensor([1.0, 0.9, 0.5, 0.01]))
        net.conv2.weight.copy_(torch.tensor([[3.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0]]).view(2, 4, 1, 1))
        net.fc.weight.copy_(torch.tensor([[0.5, 0.6], [0.7, 0.8], [0.9, 1.0]]))
    return net


def test_hand_set_model_gives_the_known_answers():
    net = hand_set()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    d = compress.diagnose(net, sparsity=0.5, filters=0.5, rank=0.5)
    rows = {r.name: r for r in d.layers}
    assert list(rows) == ["conv1.weight", "conv2.weight", "fc.weight"]
    # 18 entries; the 9 smallest |w|: the six zeros of conv2, 0.1, 0.2 and 0.5 → threshold 0.5
    assert d.threshold_global == pytest.approx(0.5)
    assert rows["conv1.weight"].pruned_share_global == pytest.approx(2 / 4)
    assert rows["conv2.weight"].pruned_share_global == pytest.approx(6 / 8)
    assert rows["fc.weight"].pruned_share_global == pytest.approx(1 / 6)
    assert rows["conv1.weight"].threshold_layer == pytest.approx(0.2)      # 2 of 4 smallest: 0.1, 0.2
    c1 = rows["conv1.weight"]
    assert (c1.shrunken, c1.shrunken_alive, c1.filters) == (2, 1, 4)
    assert c1.filter_norm_spread == pytest.approx(0.1 / 4)
    assert (c1.removed, c1.alive_removed) == (2, 1)       # L1 removal drops filters 1 and 3; 1 is alive
    # conv1's matrix view is 4×1: rank 1 of 1, all energy; conv2 is diag(3, 1) on two columns: rank 1
    assert (c1.rank, c1.energy_kept) == (1, pytest.approx(1.0))
    c2 = rows["conv2.weight"]
    assert c2.shrunken_alive is None and c2.alive_removed is None              # no BN after conv2
    assert (c2.rank, c2.sigma_ratio, c2.energy_kept) == (1, pytest.approx(1.0), pytest.approx(9 / 10))
    assert rows["fc.weight"].removed == 0                                       # filters: convs only
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())  # model untouched


def test_spectrum_matches_numpy_on_a_random_layer():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 6, 3), nn.Flatten(), nn.Linear(6 * 4 * 4, 5))
    d = compress.diagnose(net, rank=0.5)
    w = net[0].weight.detach().double().reshape(6, -1)
    s = torch.linalg.svdvals(w)
    row = d.layers[0]
    assert row.rank == 3
    assert row.energy_kept == pytest.approx(float((s[:3] ** 2).sum() / (s ** 2).sum()))
    assert row.sigma_ratio == pytest.approx(float(s[2] / s[0]))
    # global threshold: brute force over every weight
    every = torch.cat([p.detach().double().abs().flatten() for n, p in net.named_parameters() if n.endswith("weight")])
    n_pruned = round(0.9 * every.numel())
    assert d.threshold_global == pytest.approx(float(every.sort().values[n_pruned - 1]))


def test_global_pruning_agrees_with_prune():
    """The pruned share per layer is what `prune(scope="global")` zeroes there (no ties here)."""
    torch.manual_seed(1)
    net = nn.Sequential(nn.Conv2d(2, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 4, 3), nn.Flatten(),
                        nn.Linear(4, 2))
    with torch.no_grad():
        net[3].weight.mul_(0.1)
    d = compress.diagnose(net, sparsity=0.7)
    pruned = compress.prune(net, sparsity=0.7)
    for row, (name, t) in zip(d.layers, [(n, p) for n, p in pruned.named_parameters() if n.endswith("weight") and p.dim() > 1]):
        assert row.name == name
        assert row.pruned_share_global == pytest.approx(float((t == 0).double().mean()))
    assert d.layers[1].pruned_share_global > d.layers[0].pruned_share_global   # the shrunken layer goes first


def test_table_has_a_row_per_layer_and_dashes_without_bn():
    text = str(compress.diagnose(hand_set(), sparsity=0.5))
    lines = text.splitlines()
    assert len(lines) == 2 + 3
    assert "| conv1.weight | 4×1×1×1 |" in lines[2] and " 2/4 | 1 | 1/2 |" in lines[2]
    assert "| 0/2 | — | —/1 |" in lines[3]      # conv2: no BN; removal drops 1 of its 2 filters


@pytest.mark.parametrize("kwargs,name", [(dict(sparsity=1.5), "sparsity"), (dict(filters=-0.1), "filters"),
                                         (dict(rank=0.0), "rank"), (dict(shrunken=True), "shrunken"),
                                         (dict(alive="x"), "alive")])
def test_bad_arguments_name_themselves(kwargs, name):
    with pytest.raises(ValueError, match=name):
        compress.diagnose(hand_set(), **kwargs)


def test_a_model_without_conv_or_linear_is_refused():
    with pytest.raises(ValueError, match="no Conv2d or Linear"):
        compress.diagnose(nn.Sequential(nn.ReLU()))
