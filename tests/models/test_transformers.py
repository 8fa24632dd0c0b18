"""The zoo's transformers "vit" and "gpt": shapes, causality, the tied head, Hugging Face's init, coupled
removal of heads and FFN units (exact against the same slices masked, run by the model's own forward at
new sizes), and `constrain` leaving the output as it was."""
from __future__ import annotations

import sys
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "compress"))

import sparsefw  # noqa: E402
from sparsefw.compress import count_parameters, remove_filters  # noqa: E402
from sparsefw.models import GPT, ViT, build_model, model_options  # noqa: E402
from transformer_zoo import masked_by_plan  # noqa: E402

VOCAB, CONTEXT = 97, 64


def _model(name, dtype=torch.float64, **options):
    args = (10, 1, 28) if name == "vit" else (VOCAB, 1, CONTEXT)
    return build_model(name, *args, seed=0, **options).to(dtype).eval()


def _inputs(name, batch, length=16, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    if name == "vit":
        return torch.randn(batch, 1, 28, 28, generator=g, dtype=dtype)
    return torch.randint(0, VOCAB, (batch, length), generator=g)


@torch.no_grad()
def _checkpoint_like(model, seed=0):
    """Weights away from the init: biases and LayerNorm shifts nonzero, LN scales spread, matrices × 3,
    so folding a removed unit's constants and ranking units by norm are both exercised."""
    g = torch.Generator().manual_seed(seed)
    for p in model.parameters():
        noise = torch.randn(p.shape, generator=g, dtype=p.dtype)
        p.mul_(3.0) if p.dim() >= 2 else p.add_(0.5 * noise)
    return model


def test_shapes_defaults_and_options():
    vit, gpt = _model("vit"), _model("gpt")
    assert vit(_inputs("vit", 3)).shape == (3, 10)
    assert gpt(_inputs("gpt", 3, 20)).shape == (3, 20, VOCAB)
    assert gpt(_inputs("gpt", 2, CONTEXT)).shape == (2, CONTEXT, VOCAB)
    assert vit.position_embeddings.shape == (1, 16, 64) and vit.patch_embeddings.stride == (7, 7)
    assert len(vit.layer) == len(gpt.h) == 2 and gpt.h[0].intermediate.out_features == 256
    assert vit.layer[0].attention.num_attention_heads == 4 and vit.layer[0].intermediate.out_features == 128
    assert set(model_options("vit")) == {"patch", "dim", "depth", "heads", "mlp"}
    assert set(model_options("gpt")) == {"dim", "depth", "heads", "mlp"}
    small = build_model("gpt", VOCAB, 1, 32, dim=32, depth=3, heads=2, mlp=48)
    attention = small.h[0].attention
    assert (len(small.h), attention.num_attention_heads, attention.attention_head_size, small.wpe.num_embeddings) \
        == (3, 2, 16, 32)
    assert build_model("vit", 3, 3, 32, patch=4).position_embeddings.shape == (1, 64, 64)


def test_bad_sizes_are_refused():
    with pytest.raises(ValueError, match=r"dim must be a multiple of heads, got dim=30, heads=4"):
        build_model("gpt", VOCAB, 1, 64, dim=30)
    with pytest.raises(ValueError, match=r"image_size must be a multiple of patch=7, got image_size=32"):
        build_model("vit", 10, 3, 32)
    with pytest.raises(ValueError, match=r"model 'gpt' needs image_size \(image_size is its context length"):
        build_model("gpt", VOCAB, 1)
    with pytest.raises(ValueError, match=r"heads must be an int >= 1, got heads=0"):
        build_model("vit", 10, 1, 28, heads=0)
    with pytest.raises(ValueError, match=r"depth must be an int >= 1, got depth=\[2\]"):
        build_model("gpt", VOCAB, 1, 64, depth=[2])


def test_hugging_face_init():
    for model in (GPT(VOCAB, CONTEXT), ViT(10, 1, 28)):
        for name, p in model.named_parameters():
            if p.dim() >= 2:
                assert 0.015 < float(p.detach().std()) < 0.025, name
            elif name.endswith("bias"):
                assert not p.any(), name
            else:
                assert torch.equal(p, torch.ones_like(p)), name         # LayerNorm weights


def test_gpt_is_causal_and_its_head_is_tied():
    gpt = _checkpoint_like(_model("gpt"))
    assert gpt.lm_head.weight is gpt.wte.weight and gpt.lm_head.bias is None
    x = _inputs("gpt", 2, 12)
    y = x.clone()
    y[:, 7] = (y[:, 7] + 1) % VOCAB
    with torch.no_grad():
        a, b = gpt(x), gpt(y)
    torch.testing.assert_close(a[:, :7], b[:, :7], rtol=0, atol=1e-12)
    assert (a[:, 7:] - b[:, 7:]).abs().amax(-1).min() > 1e-6              # every later position sees it


@pytest.mark.parametrize("name", ["vit", "gpt"])
def test_coupled_removal_drops_whole_heads_and_units_and_equals_masking(name):
    model = _checkpoint_like(_model(name))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        compressed, recipe = remove_filters(model, 0.5, _inputs(name, 2), coupled=True, return_recipe=True)
    assert type(compressed) is type(model) and count_parameters(compressed) < 0.6 * count_parameters(model)
    for block in (compressed.layer if name == "vit" else compressed.h):
        attention = block.attention
        assert (attention.num_attention_heads, attention.attention_head_size, attention.all_head_size) == (2, 16, 32)
        assert attention.query.out_features == attention.dense.in_features == 32
        assert block.intermediate.out_features == (128 if name == "gpt" else 64)        # mlp 256 / 128 halved
    if name == "gpt":
        assert compressed.lm_head.weight is compressed.wte.weight
    masked = masked_by_plan(model, recipe["slices"])
    with torch.no_grad():
        for batch, length in ((1, 5), (5, 40)):                          # sizes the capture never saw
            x = _inputs(name, batch, length, seed=batch)
            expected = masked(x)
            assert float((compressed(x) - expected).norm() / expected.norm()) <= 1e-6


@pytest.mark.parametrize("name", ["vit", "gpt"])
def test_constrain_k_support_leaves_the_output_unchanged(name):
    model = _model(name)
    x = _inputs(name, 2)
    with torch.no_grad():
        before = model(x)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        groups = sparsefw.constrain(model, "k_support", example_inputs=x)
    assert groups and not [str(w.message) for w in caught if type(w.message).__name__ == "RescaledWarning"]
    with torch.no_grad():
        assert float((model(x) - before).norm() / before.norm()) <= 1e-6
    if name == "gpt":
        assert sum(p is model.wte.weight for g in groups for p in g["params"]) == 1   # tied: one region
    assert isinstance(model.lm_head if name == "gpt" else model.classifier, nn.Linear)


def test_a_head_size_other_than_dim_over_heads_sets_the_attention_width():
    """GPT(head_size=h): q/k/v map dim → heads·h and the output dense back; the forward runs, and a
    model at half the heads (the benchmark's "native" net) has exactly half the attention weights."""
    model = GPT(10, 8, dim=16, heads=4, head_size=2)
    attention = model.h[0].attention
    assert attention.query.weight.shape == (8, 16) and attention.dense.weight.shape == (16, 8)
    assert model(torch.randint(0, 10, (2, 8))).shape == (2, 8, 10)
    half = GPT(10, 8, dim=16, heads=2, head_size=2).h[0].attention
    assert half.query.weight.numel() * 2 == attention.query.weight.numel()
    with pytest.raises(ValueError, match="head_size must be an int >= 1"):
        GPT(10, 8, dim=16, heads=4, head_size=0)
