"""Magnitude pruning: exact zero counts, the right entries, BN/biases untouched."""
import copy

import pytest
import torch
from torch import nn

from nets import CifarResNet, randomize
from sparsefw.compress import prune, rebuild


def weights(model):
    return {n: p for n, p in model.named_parameters()
            if n.endswith("weight") and p.dim() > 1}


@pytest.mark.parametrize("sparsity", [0.0, 0.37, 0.9, 1.0])
def test_global_exact_count_and_smallest_entries(sparsity):
    model = randomize(CifarResNet(blocks=1))
    before = copy.deepcopy(model)
    pruned = prune(model, sparsity, scope="global")
    old, new = weights(before), weights(pruned)
    magnitudes = torch.cat([p.detach().abs().flatten() for p in old.values()])
    k = round(sparsity * magnitudes.numel())
    zeros = sum(int((p == 0).sum()) for p in new.values())
    assert zeros == k
    if 0 < k < magnitudes.numel():  # brute force: every zero is below every survivor
        threshold = magnitudes.sort().values[k - 1]
        for name, p in new.items():
            assert bool((old[name].abs()[p == 0] <= threshold).all())
            assert bool((old[name].abs()[p != 0] >= threshold).all())
            torch.testing.assert_close(p[p != 0], old[name][p != 0], rtol=0, atol=0)
    for name, p in pruned.named_parameters():  # BN parameters and biases untouched
        if name not in new:
            assert torch.equal(p, dict(before.named_parameters())[name]), name
    for name, p in model.named_parameters():  # input untouched
        assert torch.equal(p, dict(before.named_parameters())[name]), name


def test_layer_scope_exact_count_per_tensor():
    model = randomize(CifarResNet(blocks=1))
    pruned, recipe = prune(model, 0.55, scope="layer", return_recipe=True)
    for name, p in weights(pruned).items():
        assert int((p == 0).sum()) == round(0.55 * p.numel()) == recipe["zeros"][name], name
    assert isinstance(rebuild(model, recipe), CifarResNet)


def test_include_bias_and_norm_and_plain_result():
    model = nn.Sequential(nn.Linear(6, 5), nn.BatchNorm1d(5), nn.Linear(5, 2))
    pruned = prune(model, 0.5, include_bias=True, include_norm=True)
    total = sum(p.numel() for p in model.parameters())
    assert sum(int((p == 0).sum()) for p in pruned.parameters()) == round(0.5 * total)
    assert not list(pruned.named_buffers(recurse=True))[0][0].endswith("mask")
    assert all(not m._forward_pre_hooks for m in pruned.modules())


def test_validation():
    model = nn.Linear(3, 3)
    with pytest.raises(ValueError, match="sparsity"):
        prune(model, 1.5)
    with pytest.raises(ValueError, match="scope"):
        prune(model, 0.5, scope="tensor")
    with pytest.raises(ValueError, match="no Conv or Linear"):
        prune(nn.ReLU(), 0.5)
