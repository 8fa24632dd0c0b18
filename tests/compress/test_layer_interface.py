"""Compressed layers keep their layer's interface: the layer zoo (forwards reading `.weight.dtype`,
MultiheadAttention's out_proj.weight, `conv.stride`, `linear.in_features`) factorized and
filter-removed, each against its independent reference (numpy truncated SVD / ln_structured mask);
the composed weight is the layer's function; failing forwards and no-op compressions are reported."""
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from nets import PlainCNN, randomize
from sparsefw.compress import (FactorizedConv2d, FactorizedLinear, ReducedConv2d, count_flops, count_parameters,
                               factorize, prune, rebuild, remove_filters)
from test_factorize_zoo import low_rank_copy
from test_remove_filters import masked_copy
from zoo_layers import LAYER_ZOO, TFMobileNetV2

# layers each zoo model must get factorized at rank 0.25 (the ones its forward reads attributes of)
READ_LAYERS = {"vit": {"patch_embeddings.projection", "encoder.self_attention.out_proj", "classifier"},
               "tf_mobilenetv2": {"stem.0.conv", "blocks.1.project.0.conv", "head.0.conv"},
               "in_features_head": {"fc", "out", "features.0"}}


def build(name):
    make, sizes = LAYER_ZOO[name]
    torch.manual_seed(0)
    return randomize(make()), sizes


def image(size, seed, dtype=torch.float64):
    return torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(seed), dtype=dtype)


@pytest.mark.parametrize("name", sorted(LAYER_ZOO))
def test_factorized_zoo_runs_its_own_forward_and_equals_the_truncated_svd_weights(name):
    model, sizes = build(name)
    small, recipe = factorize(model, rank=0.25, layers="all", cost="params", return_recipe=True)
    assert READ_LAYERS[name] <= set(recipe["ranks"])
    assert type(small) is type(model)
    for layer in recipe["ranks"]:
        new, old = small.get_submodule(layer), model.get_submodule(layer)
        assert isinstance(new, (FactorizedConv2d, FactorizedLinear))
        assert isinstance(new, nn.Conv2d if isinstance(old, nn.Conv2d) else nn.Linear)
    reference = low_rank_copy(model, recipe["ranks"])
    for seed, size in enumerate(sizes):
        x = image(size, seed, torch.float32 if name == "vit" else torch.float64)   # ViT casts to weight.dtype
        with torch.no_grad():
            torch.testing.assert_close(small(x), reference(x), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("name", sorted(LAYER_ZOO))
def test_filter_removed_zoo_equals_the_masked_model(name):
    model, sizes = build(name)
    compressed, recipe = remove_filters(model, 0.5, image(sizes[0], 0), return_recipe=True)
    if name != "in_features_head":     # shape-dependent forwards: the in-place path, their own forward
        assert recipe["in_place"] and type(compressed) is type(model)
        reduced = [m for m in compressed.modules() if isinstance(m, ReducedConv2d)]
        assert reduced and all(isinstance(m, nn.Conv2d) for m in reduced)
    reference = masked_copy(model, 0.5)
    for seed, size in enumerate(sizes):
        x = image(size, seed, torch.float32 if name == "vit" else torch.float64)
        with torch.no_grad():
            torch.testing.assert_close(compressed(x), reference(x), rtol=1e-10, atol=1e-10)


def truncated(weight: torch.Tensor, groups: int, r: int) -> torch.Tensor:
    """The rank-r truncated SVD of every group's (c_out/g) × (c_in/g·kh·kw) matrix, by numpy."""
    rows = weight.detach().numpy().reshape(groups, weight.shape[0] // groups, -1)
    parts = []
    for matrix in rows:
        u, s, vh = np.linalg.svd(matrix, full_matrices=False)
        parts.append((u[:, :r] * s[:r]) @ vh[:r])
    return torch.from_numpy(np.stack(parts).reshape(weight.shape))


CONVS = {"grouped": lambda: nn.Conv2d(6, 8, (3, 2), stride=(2, 1), padding=(1, 2), dilation=(1, 2), groups=2),
         "plain": lambda: nn.Conv2d(4, 10, 3, padding=1, bias=False)}


@pytest.mark.parametrize("kind", sorted(CONVS))
def test_factorized_conv_answers_the_conv_interface_and_its_weight_is_its_function(kind):
    conv = randomize(nn.Sequential(CONVS[kind]()))[0]
    f = factorize(nn.Sequential(conv), rank=2, skip_no_saving=False, cost="params")[0]
    assert isinstance(f, FactorizedConv2d) and isinstance(f, nn.Conv2d)
    for attr in ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation", "groups",
                 "padding_mode"):
        assert getattr(f, attr) == getattr(conv, attr), attr
    assert f.weight.dtype == torch.float64 and f.weight.device == conv.weight.device
    torch.testing.assert_close(f.weight, truncated(conv.weight, conv.groups, 2), rtol=1e-12, atol=1e-12)
    assert (f.bias is None) == (conv.bias is None)
    x = torch.randn(2, conv.in_channels, 7, 9, dtype=torch.float64)
    torch.testing.assert_close(F.conv2d(x, f.weight, f.bias, f.stride, f.padding, f.dilation, f.groups), f(x),
                               rtol=1e-12, atol=1e-12)
    g, m, n = conv.groups, conv.out_channels // conv.groups, conv.weight[0].numel()
    bias = conv.out_channels if conv.bias is not None else 0
    assert count_parameters(f) == g * 2 * (m + n) + bias          # the factors, no dense weight
    assert set(f.state_dict()) == {"0.weight", "1.weight"} | ({"1.bias"} if bias else set())
    f.weight.sum().backward()
    assert f.first.weight.grad is not None and f.second.weight.grad is not None


def test_factorized_linear_answers_the_linear_interface():
    linear = randomize(nn.Sequential(nn.Linear(12, 7)))[0]
    f = factorize(nn.Sequential(linear), rank=3, layers="linear", cost="params")[0]
    assert isinstance(f, FactorizedLinear) and isinstance(f, nn.Linear)
    assert (f.in_features, f.out_features) == (12, 7) and f.bias is f.second.bias
    torch.testing.assert_close(f.weight, truncated(linear.weight, 1, 3), rtol=1e-12, atol=1e-12)
    x = torch.randn(5, 12, dtype=torch.float64)
    torch.testing.assert_close(F.linear(x, f.weight, f.bias), f(x), rtol=1e-12, atol=1e-12)
    assert count_parameters(f) == 3 * (12 + 7) + 7


class _ShapeBranch(nn.Module):
    """torch.fx cannot trace the branch on a shape: remove_filters replaces the conv in place."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.head = nn.Conv2d(6, 2, 1)

    def forward(self, x):
        y = self.conv(x)
        return self.head(y if x.shape[-1] > 4 else -y)


def test_reduced_conv_weight_is_the_masked_weight_and_reloads(tmp_path):
    model = randomize(_ShapeBranch())
    x = torch.randn(2, 3, 6, 6, dtype=torch.float64)
    compressed, recipe = remove_filters(model, 0.5, x, return_recipe=True)
    conv, masked = compressed.conv, masked_copy(model, 0.5).conv
    assert isinstance(conv, ReducedConv2d) and conv.first.out_channels == 3
    assert (conv.in_channels, conv.out_channels, conv.kernel_size, conv.padding) == (3, 6, (3, 3), (1, 1))
    assert torch.equal(conv.weight, masked.weight) and torch.equal(conv.bias, model.conv.bias)
    torch.testing.assert_close(F.conv2d(x, conv.weight, conv.bias, conv.stride, conv.padding), conv(x),
                               rtol=1e-12, atol=1e-12)
    torch.save(compressed.state_dict(), tmp_path / "c.pt")
    rebuilt = rebuild(randomize(_ShapeBranch(), seed=1), recipe)
    rebuilt.load_state_dict(torch.load(tmp_path / "c.pt", weights_only=True))
    assert torch.equal(rebuilt.conv.weight, conv.weight)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_zoo_exports_to_onnx_factorized_and_filter_removed(tmp_path):
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    model = randomize(TFMobileNetV2()).float()
    x = torch.randn(2, 3, 15, 17)
    for compressed in (factorize(model, rank=0.25, layers="all", cost="params"), remove_filters(model, 0.5, x)):
        path = tmp_path / "m.onnx"
        torch.onnx.export(compressed, (x,), str(path), dynamo=False, input_names=["x"], output_names=["y"])
        got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x.numpy()})[0]
        torch.testing.assert_close(torch.from_numpy(got), compressed(x).detach(), rtol=1e-4, atol=1e-4)


class _StrictType(nn.Module):
    """A forward that insists on exact layer types, as some fusion/quantization code does."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)
        self.fc = nn.Linear(8, 8)

    def forward(self, x):
        if type(self.conv) is not nn.Conv2d or type(self.fc) is not nn.Linear:
            raise TypeError("expected a plain nn.Conv2d and nn.Linear")
        y = self.conv(x)
        return self.fc(y.mean((2, 3)) if x.shape[-1] > 4 else y.amax((2, 3)))


class _Wrapper(nn.Module):
    def __init__(self):
        super().__init__()
        self.block = _StrictType()

    def forward(self, x):
        return self.block(x)


@pytest.mark.parametrize("compress, layer", [
    (lambda m, x: factorize(m, rank=2, layers="linear", example_inputs=x, cost="params"), "block.fc"),
    (lambda m, x: remove_filters(m, 0.5, x), "block.conv")])
def test_a_compressed_model_whose_forward_fails_names_the_module(compress, layer):
    x = torch.randn(2, 3, 6, 6)
    with pytest.raises(ValueError, match=rf"fails on example_inputs in module 'block' \(_StrictType; "
                                         rf"compressed layers there: {layer}\): TypeError: expected") as info:
        compress(_Wrapper(), x)
    assert isinstance(info.value.__cause__, TypeError)


NO_OPS = [
    (lambda: factorize(nn.Sequential(nn.Conv2d(3, 4, 3)), rank=0.5, layers="linear"),
     r"factorize\(layers='linear'\) changed nothing: the model has no Linear layer"),
    (lambda: factorize(PlainCNN(), rank=1.0, layers="all"),
     r"changed nothing: all 4 selected layer\(s\) were kept dense as not paying \(features.0: rank 8 does not save"),
    (lambda: remove_filters(PlainCNN(), 0.04, torch.randn(1, 3, 8, 8)),
     r"remove_filters\(amount=0.04\) changed nothing: round\(amount·c_out\) = 0 for every conv \(the largest "
     r"has c_out = 12\)"),
    (lambda: remove_filters(PlainCNN(), 0.05, torch.randn(1, 3, 8, 8), coupled=True),
     r"remove_filters\(amount=0.05, coupled=True\) changed nothing: ⌊amount·C⌋ = 0 for every channel space"),
    (lambda: prune(PlainCNN(), 0.0), r"prune\(sparsity=0.0, scope='global'\) changed nothing"),
]


@pytest.mark.parametrize("call, message", NO_OPS)
def test_a_compression_that_changes_nothing_warns(call, message):
    with pytest.warns(UserWarning, match=message):
        call()


def test_a_compression_that_changes_something_does_not_warn():
    x = torch.randn(1, 3, 8, 8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        factorize(PlainCNN(), rank=0.25, layers="all", cost="params")
        remove_filters(PlainCNN(), 0.5, x)
        remove_filters(PlainCNN(), 0.5, x, coupled=True)
        prune(PlainCNN(), 0.5)


def test_prune_after_factorize_prunes_the_factors_not_a_derived_weight():
    model, ranks = factorize(randomize(PlainCNN()), rank=0.5, layers="all", cost="params", return_recipe=True)
    assert set(ranks["ranks"]) == {"features.0", "features.3", "features.7", "classifier"}
    pruned, recipe = prune(model, 0.5, return_recipe=True)
    params = dict(pruned.named_parameters())
    assert set(recipe["zeros"]) == {f"{layer}.{stage}.weight" for layer in ranks["ranks"] for stage in (0, 1)}
    assert sum(int((params[n] == 0).sum()) for n in recipe["zeros"]) == round(
        0.5 * sum(params[n].numel() for n in recipe["zeros"]))


def test_flop_budget_on_a_transformer_keeps_layers_whose_forward_never_runs_dense():
    """nn.MultiheadAttention passes out_proj.weight to F.linear and never calls out_proj: its FLOPs
    do not shrink with a factor pair, so a FLOP budget leaves it dense (and used to fail on it);
    the feed-forward Linears, hidden from hooks by the fused fast path, are priced unfused."""
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(32, 2, 64, dropout=0.0, batch_first=True)
    encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False).eval()
    x = torch.randn(2, 7, 32)
    small, recipe = factorize(encoder, budget=0.8, budget_kind="flops", example_inputs=x, layers="all",
                              cost="params", return_recipe=True)
    assert set(recipe["ranks"]) == {f"layers.{i}.{name}" for i in (0, 1) for name in ("linear1", "linear2")}
    assert all("does not run on example_inputs" in recipe["skipped"][f"layers.{i}.self_attn.out_proj"]
               for i in (0, 1))
    assert 0.7 < count_flops(small, x) / count_flops(encoder, x) <= 0.8
