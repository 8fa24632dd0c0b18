"""Hugging Face's Conv1D (weight stored (in, out), y = x @ W + b by addmm) in every compression
function, on the zoo's GPT-2 (float64, checkpoint-like weights). Independent truths: the model with
each Conv1D weight replaced by its own truncated SVD (factorize), a global magnitude threshold over
every weight tensor (prune); coupled removal is in test_heads.py."""
from __future__ import annotations

import copy

import torch

from sparsefw.compress import factorize, prune
from sparsefw.compress._modules import FactorizedConv1D
from transformer_zoo import VOCAB, build

CONV1D = [f"h.{i}.{n}" for i in range(2) for n in ("c_attn", "attn_proj", "c_fc", "mlp_proj")]


def test_factorize_truncates_every_conv1d_and_keeps_its_interface():
    model, x = build("gpt2", pretrained=True)
    factorized, recipe = factorize(model, rank=0.25, layers="linear", cost="params", return_recipe=True)
    assert sorted(recipe["ranks"]) == sorted(CONV1D) and recipe["skipped"] == {"lm_head": "tied to wte.weight"}
    expected = copy.deepcopy(model)
    with torch.no_grad():
        for name in CONV1D:
            layer = expected.get_submodule(name)
            u, s, vh = torch.linalg.svd(layer.weight.t())   # the (out, in) matrix
            r = recipe["ranks"][name]
            layer.weight.copy_((u[:, :r] * s[:r] @ vh[:r]).t())
        tokens = torch.randint(1, VOCAB, (3, 6), generator=torch.Generator().manual_seed(1))
        torch.testing.assert_close(factorized(tokens), expected(tokens), rtol=1e-10, atol=1e-10)
    layer = factorized.get_submodule("h.0.c_fc")
    assert isinstance(layer, FactorizedConv1D) and (layer.nx, layer.nf) == (16, 64)
    assert layer.weight.shape == (16, 64) and factorized.lm_head.weight is factorized.wte.weight


def test_prune_counts_conv1d_weights():
    model, _ = build("gpt2", pretrained=True)
    pruned, recipe = prune(model, 0.5, return_recipe=True)
    names = [f"{n}.weight" for n in CONV1D] + ["lm_head.weight"]
    assert sorted(recipe["zeros"]) == sorted(names)
    weights = torch.cat([model.get_parameter(n).detach().abs().flatten() for n in names])
    threshold = weights.sort().values[round(0.5 * weights.numel()) - 1]
    for name in names:
        original, kept = model.get_parameter(name).detach(), pruned.get_parameter(name).detach()
        assert torch.equal(kept == 0, original.abs() <= threshold), name
