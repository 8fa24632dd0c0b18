"""Tied weights (a GPT-style head sharing the token embedding, `head.weight = embed.weight`).

Every compression counts the shared tensor once and keeps the tie, or leaves the tied layer alone
with a reason; outputs equal an independently built reference (masked or truncated model) in
float64, parameter counts the count of unique tensors.
"""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

from sparsefw.compress import count_parameters, factorize, prune, remove_filters, summarize
from sparsefw.graph import channel_groups

V, H, F, B, T = 13, 8, 16, 2, 5   # vocabulary, width, MLP hidden, batch, tokens


class TinyGPT(nn.Module):
    def __init__(self, residual: bool = True):
        super().__init__()
        self.residual = residual
        self.embed = nn.Embedding(V, H)
        self.fc1, self.fc2 = nn.Linear(H, F), nn.Linear(F, H)
        self.head = nn.Linear(H, V, bias=False)
        self.head.weight = self.embed.weight

    def forward(self, idx):
        x = self.embed(idx)
        h = self.fc2(torch.relu(self.fc1(x)))
        return self.head(x + h if self.residual else h)


UNIQUE = V * H + (H * F + F) + (F * H + H)   # embed/head once, fc1, fc2


@pytest.fixture
def gpt():
    torch.manual_seed(0)
    return TinyGPT().double().eval(), torch.randint(0, V, (B, T))


def test_prune_counts_the_tied_tensor_once_and_keeps_the_tie(gpt):
    model, idx = gpt
    pruned, recipe = prune(model, 0.5, return_recipe=True)
    assert pruned.head.weight is pruned.embed.weight
    # the truth: the k = 180 smallest |w| over the three distinct weight tensors, zeroed
    tensors = {"fc1": model.fc1.weight, "fc2": model.fc2.weight, "head": model.embed.weight}
    n = sum(t.numel() for t in tensors.values())
    threshold = torch.cat([t.detach().abs().flatten() for t in tensors.values()]).kthvalue(round(0.5 * n)).values
    reference = copy.deepcopy(model)
    with torch.no_grad():
        for name in tensors:
            weight = getattr(reference, name).weight
            weight.mul_(weight.abs() > threshold)
    assert sum(recipe["zeros"].values()) == round(0.5 * n) == 180
    assert count_parameters(pruned) == UNIQUE
    torch.testing.assert_close(pruned(idx), reference(idx), rtol=0, atol=0)


def test_summarize_counts_the_tied_tensor_once(gpt):
    model, idx = gpt
    pruned = prune(model, 0.5)
    s = summarize(model, pruned, idx, warmup=0, repeats=1)
    assert s.params == s.params_compressed == UNIQUE
    dense = 2 * B * T * (H * F + F * H + H * V)          # the embedding lookup does no arithmetic
    assert s.flops == s.flops_compressed == dense
    nnz = {name: int(torch.count_nonzero(getattr(pruned, name).weight)) for name in ("fc1", "fc2", "head")}
    assert s.sparse_flops_compressed == 2 * B * T * sum(nnz.values())
    biases = F + H
    assert s.nonzero_params_compressed == sum(nnz.values()) + biases


def _truncated(weight: torch.Tensor, r: int) -> torch.Tensor:
    u, s, vh = torch.linalg.svd(weight.detach(), full_matrices=False)
    return u[:, :r] @ torch.diag(s[:r]) @ vh[:r]


@pytest.mark.parametrize("rule", [{"rank": 2}, {"budget": 0.8}])
def test_factorize_skips_the_tied_head_with_its_reason(gpt, rule):
    model, idx = gpt
    fac, recipe = factorize(model, layers="all", cost="params", return_recipe=True, **rule)
    assert recipe["skipped"]["head"] == "tied to embed.weight"
    assert fac.head.weight is fac.embed.weight and type(fac.head) is nn.Linear
    ranks = recipe["ranks"]
    assert set(ranks) == {"fc1", "fc2"}
    assert count_parameters(fac) == V * H + ranks["fc1"] * (H + F) + F + ranks["fc2"] * (F + H) + H
    if "budget" in rule:
        assert count_parameters(fac) <= 0.8 * UNIQUE
    reference = copy.deepcopy(model)
    with torch.no_grad():
        for name, r in ranks.items():
            getattr(reference, name).weight.copy_(_truncated(getattr(model, name).weight, r))
    torch.testing.assert_close(fac(idx), reference(idx), rtol=1e-12, atol=1e-12)


def test_coupled_removal_never_slices_a_tied_tensor():
    """Without the residual, the width H between fc2 and head is written by fc2 alone: only the
    tie (head.weight is the embedding, which writes H elsewhere) keeps it whole."""
    torch.manual_seed(0)
    model, idx = TinyGPT(residual=False).double().eval(), torch.randint(0, V, (B, T))
    fixed = {g.size: g.fixed for g in channel_groups(model, idx, include_fixed=True)}
    assert "tied to embed.weight" in fixed[H] and fixed[F] is None
    compressed, recipe = remove_filters(model, 0.5, idx, coupled=True, return_recipe=True)
    assert set(recipe["slices"]) == {"fc1.weight", "fc1.bias", "fc2.weight"}
    assert compressed.head.weight is compressed.embed.weight
    assert compressed.fc1.out_features == F // 2
    assert count_parameters(compressed) == UNIQUE - (F // 2) * (2 * H + 1)
    removed = sorted(set(range(F)) - set(recipe["slices"]["fc1.weight"][0]))
    masked = copy.deepcopy(model)
    with torch.no_grad():
        masked.fc1.weight[removed] = 0
        masked.fc1.bias[removed] = 0
        masked.fc2.weight[:, removed] = 0
    torch.testing.assert_close(compressed(idx), masked(idx), rtol=1e-12, atol=1e-12)


class ConvTied(nn.Module):
    """A conv feeding a classifier whose weight is a (label) embedding's; `read_dtype` reads the
    conv's weight in the forward, which sends remove_filters to its in-place fallback."""

    def __init__(self, read_dtype: bool):
        super().__init__()
        self.read_dtype = read_dtype
        self.conv = nn.Conv2d(3, H, 3, padding=1)
        self.head = nn.Linear(H, V)
        self.labels = nn.Embedding(V, H)
        self.head.weight = self.labels.weight

    def forward(self, x, idx):
        if self.read_dtype:
            x = x.to(self.conv.weight.dtype)
        return self.head(torch.relu(self.conv(x)).mean((2, 3))), self.labels(idx)


@pytest.mark.parametrize("read_dtype", [False, True], ids=["fx", "in-place"])
def test_remove_filters_per_layer_keeps_the_tie(read_dtype):
    torch.manual_seed(0)
    model = ConvTied(read_dtype).double().eval()
    inputs = (torch.randn(2, 3, 6, 6, dtype=torch.float64), torch.randint(0, V, (2, 4)))
    compressed, recipe = remove_filters(model, 0.5, inputs, return_recipe=True)
    assert recipe["in_place"] is read_dtype and len(recipe["filters"]["conv"]) == H // 2
    assert compressed.head.weight is compressed.labels.weight
    assert count_parameters(compressed) < count_parameters(model)
    masked = copy.deepcopy(model)
    torch_prune.ln_structured(masked.conv, "weight", 0.5, n=1, dim=0)
    for got, expected in zip(compressed(*inputs), masked(*inputs)):
        torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("read_dtype", [False, True], ids=["fx", "in-place"])
def test_remove_filters_refuses_a_tied_conv(read_dtype):
    model = ConvTied(read_dtype)
    model.other = nn.Conv2d(3, H, 3)
    model.other.weight = model.conv.weight
    inputs = (torch.randn(1, 3, 6, 6), torch.randint(0, V, (1, 4)))
    with pytest.raises(ValueError, match=r"cannot prune conv 'conv': its weight is tied to other.weight"):
        remove_filters(model, 0.5, inputs)
