"""prune(pattern="N:M") and prune(criterion="wanda") against brute force: every subset of a group
(or of an output row) enumerated, activation norms computed by explicit loops over positions."""
from __future__ import annotations

import copy
import itertools
import math

import pytest
import torch
from torch import nn

from sparsefw.compress import criteria, prune, rebuild
from sparsefw.constraints import NMKSupportBall


def best_subset(scores: list[float], keep: int) -> set[int]:
    """The `keep` positions with the largest total score (brute force over all subsets)."""
    return set(max(itertools.combinations(range(len(scores)), keep), key=lambda s: sum(scores[i] for i in s)))


def brute_nm(scores: torch.Tensor, n: int, m: int, dim: int) -> torch.Tensor:
    """Keep mask: every run of m consecutive entries along `dim` keeps its best min(n, run) entries."""
    moved = scores.movedim(dim, -1)
    keep = torch.zeros_like(moved, dtype=torch.bool)
    for index in itertools.product(*(range(s) for s in moved.shape[:-1])):
        line = moved[index].tolist()
        for start in range(0, len(line), m):
            run = line[start:start + m]
            for i in best_subset(run, min(n, len(run))):
                keep[index + (start + i,)] = True
    return keep.movedim(-1, dim)


def net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 6, 3, groups=2), nn.ReLU(),
                         nn.Flatten(), nn.Linear(6 * 4 * 4, 10), nn.ReLU(), nn.Linear(10, 4))


@pytest.mark.parametrize("pattern", ["2:4", "1:4", "3:8", "1:2"])
def test_pattern_keeps_the_n_largest_of_every_group_of_inputs(pattern):
    model = net()
    before = copy.deepcopy(model.state_dict())
    n, m = map(int, pattern.split(":"))
    pruned, recipe = prune(model, pattern=pattern, return_recipe=True)
    for name, p in model.named_parameters():
        assert torch.equal(p, before[name])                                    # the input is untouched
        q = pruned.get_parameter(name)
        if p.dim() > 1:
            assert torch.equal(q != 0, brute_nm(p.detach().abs(), n, m, 1) & (p != 0)), name
            assert torch.equal(q != 0, NMKSupportBall(p.shape, n, m, radius=1.0).mask(p.detach()) & (p != 0))
        else:
            assert torch.equal(q, p), name                                     # biases untouched
    assert recipe["pattern"] == pattern and recipe["sparsity"] == pytest.approx(1 - n / m)
    assert type(rebuild(model, recipe)) is type(model)


def test_conv1d_layer_groups_run_along_dim_0():
    """A Hugging Face-style Conv1D stores (in, out): its N:M groups run along dim 0."""
    class Conv1D(nn.Module):
        def __init__(self, nf, nx):
            super().__init__()
            self.nf, self.weight = nf, nn.Parameter(torch.randn(nx, nf))

    layer = Conv1D(3, 8)
    assert criteria.input_dim(layer) == 0 and criteria.input_dim(nn.Linear(2, 3)) == 1
    assert criteria.input_dim(nn.ConvTranspose2d(4, 2, 3)) == 0
    got = criteria.masks({"w": layer}, 0.5, (2, 4), "magnitude", None)["w"]
    assert torch.equal(got, brute_nm(layer.weight.detach().abs(), 2, 4, 0))


def test_pattern_arguments_are_validated():
    model = nn.Linear(8, 2)
    assert torch.count_nonzero(prune(model, 0.5, pattern="2:4").weight) == 8
    for kwargs, match in [(dict(sparsity=0.3, pattern="2:4"), "sparsity=0.3"), (dict(pattern="4:2"), "pattern='4:2'"),
                          (dict(sparsity=None), "sparsity=None"),
                          (dict(pattern="2:4", include_bias=True), "include_bias"),
                          (dict(sparsity=0.5, criterion="wanda"), "calibration"),
                          (dict(sparsity=0.5, calibration=[torch.zeros(1, 8)]), "calibration"),
                          (dict(sparsity=0.5, criterion="snip"), "criterion='snip'")]:
        with pytest.raises(ValueError, match=match):
            prune(model, **kwargs)


def test_wanda_on_a_linear_with_known_inputs():
    """Scores |W_ij|·‖X_j‖₂ over every calibration row (batches and tokens); per output row the kept set
    is the subset of the largest total score; with 2:4, per group."""
    torch.manual_seed(1)
    layer = nn.Linear(8, 3)
    batches = [torch.randn(4, 5, 8), (torch.randn(2, 5, 8), torch.zeros(2))]
    rows = torch.cat([batches[0].reshape(-1, 8), batches[1][0].reshape(-1, 8)]).double()
    feature_norms = [math.sqrt(sum(float(r[j]) ** 2 for r in rows)) for j in range(8)]
    scores = layer.weight.detach().double().abs() * torch.tensor(feature_norms)
    before = copy.deepcopy(layer.state_dict())
    pruned = prune(layer, 0.75, criterion="wanda", calibration=batches)
    for i in range(3):
        assert {j for j in range(8) if pruned.weight[i, j] != 0} == best_subset(scores[i].tolist(), 2)
    semi = prune(layer, criterion="wanda", calibration=batches, pattern="2:4")
    assert torch.equal(semi.weight != 0, brute_nm(scores, 2, 4, 1))
    assert all(torch.equal(v, layer.state_dict()[k]) for k, v in before.items()) and layer.training
    assert torch.equal(pruned.bias, layer.bias)


def test_wanda_conv_norms_are_those_of_the_unfolded_input():
    """A padded, strided, grouped Conv2d: ‖X_(c,i,j)‖ sums x² over the input positions each kernel
    offset reads (zeros at the padded border), by explicit loops."""
    torch.manual_seed(2)
    conv = nn.Conv2d(4, 6, 3, padding=1, stride=2, groups=2)
    x = torch.randn(2, 4, 5, 5)
    got = criteria.activation_norms(conv, {"weight": conv}, [x])["weight"]
    padded = nn.functional.pad(x, (1, 1, 1, 1)).double()
    truth = torch.zeros(4, 3, 3, dtype=torch.float64)
    for c, i, j in itertools.product(range(4), range(3), range(3)):
        truth[c, i, j] = sum(float(padded[b, c, 2 * r + i, 2 * s + j]) ** 2
                             for b in range(2) for r in range(3) for s in range(3)) ** 0.5
    # output channel o belongs to group o // 3, which reads input channels 2·(o // 3) + (0, 1)
    for o in range(6):
        assert torch.allclose(got[o], truth[2 * (o // 3):2 * (o // 3) + 2], rtol=1e-12)
    pruned = prune(conv, 0.5, criterion="wanda", calibration=[x])
    assert torch.count_nonzero(pruned.weight) == 6 * 9      # half of every output unit's 18 weights


def test_wanda_on_a_conv1d_layer_and_a_model_with_layers_it_never_calls():
    conv = nn.Conv1d(2, 3, 3, padding=1)
    x = torch.randn(2, 2, 7)
    norms = criteria.activation_norms(conv, {"weight": conv}, [x])["weight"]
    padded = nn.functional.pad(x, (1, 1)).double()
    for c, i in itertools.product(range(2), range(3)):
        assert float(norms[0, c, i]) == pytest.approx(float(padded[:, c, i:i + 7].pow(2).sum().sqrt()))
    encoder = nn.TransformerEncoder(nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True), 1,
                                    enable_nested_tensor=False)
    with pytest.warns(UserWarning, match="out_proj"):
        pruned = prune(encoder, 0.5, criterion="wanda", calibration=[torch.randn(2, 5, 8)])
    assert pruned.layers[0].linear1.weight.count_nonzero() == 16 * 4


def test_wanda_refuses_layers_it_cannot_score_and_empty_calibration():
    model = nn.Sequential(nn.ConvTranspose2d(2, 3, 3), nn.Flatten(), nn.Linear(3 * 5 * 5, 2))
    with pytest.raises(ValueError, match=r"0.weight \(ConvTranspose2d\)"):
        prune(model, 0.5, criterion="wanda", calibration=[torch.randn(1, 2, 3, 3)])
    with pytest.raises(ValueError, match="reached no layer"):
        prune(nn.Linear(4, 2), 0.5, criterion="wanda", calibration=[])
