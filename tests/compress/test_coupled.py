"""Coupled channel removal and the zoo: both removal modes against their masked models."""
import copy
import json

import pytest
import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

from cases import NETS, build, inputs
from nets import CifarResNet, DataDependent, PlainCNN, SplitNet, randomize
from sparsefw.compress import channel_groups, count_parameters, rebuild, remove_filters
from zoo import ZOO, LibResNet, first_tensor


def coupled_masked_copy(model, x, amount):
    """The model with ⌊amount·C⌋ channels of every space zeroed in all member parameters; the
    channels ranked here by the l1 norm of the concatenated member slices (computed independently
    of the library's ranking, on the original weights; ties: the higher index goes first)."""
    masked = copy.deepcopy(model)
    params, original = dict(masked.named_parameters()), dict(model.named_parameters())
    with torch.no_grad():
        for group in channel_groups(model, x):
            slices = [[original[m.name].index_select(m.dim, m.index[c]).abs().sum().item()
                       for m in group.members if m.parameter] for c in range(group.size)]
            norms = [sum(s) for s in slices]
            order = sorted(range(group.size), key=lambda c: (-norms[c], c))
            removed = order[group.size - int(amount * group.size):]
            for m in group.members:
                if m.parameter and removed:
                    params[m.name].index_fill_(m.dim, m.index[removed].flatten(), 0.0)
    return masked


def per_layer_masked_copy(model, amount):
    masked = copy.deepcopy(model)
    for module in masked.modules():
        if isinstance(module, nn.Conv2d):
            torch_prune.ln_structured(module, "weight", amount, n=1, dim=0)
    return masked


def run(model, x):
    with torch.no_grad():
        return first_tensor(model(x))


@pytest.mark.parametrize("amount", [0.3, 0.7])
@pytest.mark.parametrize("name", sorted(NETS))
def test_coupled_matches_masked_model_at_two_sizes(name, amount):
    model, sizes = build(name)
    example = inputs(sizes[0], 0)
    compressed = remove_filters(model, amount, example, coupled=True)
    masked = coupled_masked_copy(model, example, amount)
    assert type(compressed) is type(model)  # the user's own class and forward
    for seed, size in enumerate(sizes, 1):
        x = inputs(size, seed)
        torch.testing.assert_close(run(compressed, x), run(masked, x), rtol=1e-10, atol=1e-10)
        assert (run(masked, x) - run(model, x)).abs().max() > 1e-6  # the masking matters
    assert count_parameters(compressed) < count_parameters(model)


@pytest.mark.parametrize("name", sorted(ZOO))
def test_per_layer_matches_ln_structured_on_the_zoo(name):
    model, sizes = build(name)
    compressed = remove_filters(model, 0.5, inputs(sizes[0], 0))
    masked = per_layer_masked_copy(model, 0.5)
    for seed, size in enumerate(sizes, 1):
        x = inputs(size, seed)
        torch.testing.assert_close(run(compressed, x), run(masked, x), rtol=1e-10, atol=1e-10)
    assert count_parameters(compressed) < count_parameters(model)


def test_every_space_loses_floor_amount_channels_and_streams_shrink():
    model, sizes = build("resnet")
    x = inputs(sizes[0], 0)
    groups = channel_groups(model, x)
    compressed = remove_filters(model, 0.5, x, coupled=True)
    shapes = dict(compressed.named_parameters())
    for group in groups:
        for m in group.members:
            if m.parameter and m.index.shape[1] == 1:
                expected = dict(model.named_parameters())[m.name].shape[m.dim] - group.size // 2
                assert shapes[m.name].shape[m.dim] == expected, m.name
    # the residual stream of stage 1 (stem, identity block) shrank: stem conv and block convs
    assert compressed.conv1.out_channels == 4 and compressed.layer1[0].conv2.out_channels == 4
    assert compressed.layer1[0].conv1.in_channels == 4 and compressed.bn1.num_features == 4
    # the model keeps its methods and attributes
    assert compressed.forward_features(x).shape[1] == model.forward_features(x).shape[1]  # output stage fixed
    assert compressed.num_classes == model.num_classes


def test_ranking_is_the_joint_norm_over_members():
    """One space: conv1 filters + bias + BN γ/β + conv2 columns; the kept channels are those of the
    largest joint l2 norm, computed here by hand."""
    torch.manual_seed(3)
    model = randomize(nn.Sequential(nn.Conv2d(3, 6, 3), nn.BatchNorm2d(6), nn.ReLU(), nn.Conv2d(6, 2, 1)))
    x = torch.randn(1, 3, 6, 6, dtype=torch.float64)
    _, recipe = remove_filters(model, 0.5, x, coupled=True, criterion="l2", return_recipe=True)
    conv1, bn, conv2 = model[0], model[1], model[3]
    joint = (conv1.weight.pow(2).sum((1, 2, 3)) + conv1.bias.pow(2) + bn.weight.pow(2) + bn.bias.pow(2)
             + conv2.weight.pow(2).sum((0, 2, 3))).sqrt()
    expected = sorted(torch.topk(joint, 3).indices.tolist())
    assert recipe["slices"]["0.weight"] == {0: expected}
    assert recipe["slices"]["3.weight"] == {1: expected}
    assert recipe["slices"]["1.running_var"] == {0: expected}


def test_coupled_recipe_rebuilds_and_loads_weights_only(tmp_path):
    model, sizes = build("mobilenetv2")
    x = inputs(sizes[0], 0)
    compressed, recipe = remove_filters(model, 0.5, x, coupled=True, return_recipe=True)
    torch.save(compressed.state_dict(), tmp_path / "c.pt")
    (tmp_path / "r.json").write_text(json.dumps(recipe))
    rebuilt = rebuild(NETS["mobilenetv2"][0]().double().eval(), json.loads((tmp_path / "r.json").read_text()))
    rebuilt.load_state_dict(torch.load(tmp_path / "c.pt", weights_only=True))
    y = inputs(sizes[1], 5)
    torch.testing.assert_close(run(rebuilt, y), run(compressed, y), rtol=0, atol=0)


def test_per_layer_in_place_fallback_keeps_the_class_and_rebuilds(tmp_path):
    """LibResNet branches on shapes, so torch.fx cannot trace it: convs are replaced in place."""
    model, sizes = build("resnet")
    x = inputs(sizes[0], 0)
    compressed, recipe = remove_filters(model, 0.5, x, return_recipe=True)
    assert type(compressed) is LibResNet and recipe["in_place"]
    torch.save(compressed.state_dict(), tmp_path / "c.pt")
    rebuilt = rebuild(LibResNet().double().eval(), json.loads(json.dumps(recipe)))
    rebuilt.load_state_dict(torch.load(tmp_path / "c.pt", weights_only=True))
    y = inputs(sizes[1], 5)
    torch.testing.assert_close(run(rebuilt, y), run(compressed, y), rtol=0, atol=0)


def test_capture_errors_are_one_clear_message():
    x = torch.randn(1, 3, 8, 8)
    with pytest.raises(ValueError, match=r"could not capture DataDependent with torch.export"):
        remove_filters(DataDependent(), 0.5, x, coupled=True)
    with pytest.raises(ValueError, match=r"torch.fx.*; and .*torch.export"):
        remove_filters(DataDependent(), 0.5, x)
    with pytest.raises(ValueError, match="coupled must be True or False"):
        remove_filters(PlainCNN(), 0.5, x, coupled="yes")


def test_coupled_onnx_export(tmp_path):
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    model = randomize(CifarResNet(blocks=1)).float()
    x = torch.randn(2, 3, 16, 16)
    compressed = remove_filters(model, 0.5, x, coupled=True)
    path = tmp_path / "m.onnx"
    torch.onnx.export(compressed, (x,), str(path), dynamo=False, input_names=["x"], output_names=["y"],
                      dynamic_axes={"x": {0: "n", 2: "h", 3: "w"}})
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    y = torch.randn(3, 3, 12, 20)
    got = session.run(None, {"x": y.numpy()})[0]
    torch.testing.assert_close(torch.from_numpy(got), compressed(y).detach(), rtol=1e-4, atol=1e-4)


def test_coupled_removal_around_a_split_along_the_channels():
    """The spaces the split keeps whole stay (tests/graph/test_channel_groups.py), the one after it
    shrinks, exactly as the masked model."""
    torch.manual_seed(0)
    model = randomize(SplitNet())
    x = torch.randn(2, 3, 7, 8, dtype=torch.float64)
    compressed = remove_filters(model, 0.5, x, coupled=True)
    assert (compressed.a.out_channels, compressed.c.out_channels, compressed.fc.in_features) == (6, 4, 4)
    y = torch.randn(3, 3, 9, 6, dtype=torch.float64)
    torch.testing.assert_close(run(compressed, y), run(coupled_masked_copy(model, x, 0.5), y),
                               rtol=1e-10, atol=1e-10)


class _HardCodedView(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.fc = nn.Conv2d(3, 8, 3), nn.Linear(8 * 4 * 4, 2)

    def forward(self, x):
        return self.fc(self.conv(x).view(-1, 8 * 4 * 4))


def test_a_forward_with_hard_coded_channel_counts_is_refused():
    with pytest.raises(ValueError, match="hard-codes a channel count"):
        remove_filters(randomize(_HardCodedView()), 0.5, torch.randn(2, 3, 6, 6, dtype=torch.float64),
                       coupled=True)
