"""The channel analysis (`sparsefw.graph.channel_groups`): coupled channel spaces, their member
slices (`ChannelSlice`: name, dim, index, role) and the reasons a space stays whole
(`ChannelGroup.fixed`), on hand-checked nets. Surgery over these spaces: tests/compress/test_coupled.py."""
import torch

from cases import build, inputs
from nets import CifarResNet, SplitNet, randomize
from sparsefw.graph import channel_groups


def test_groups_of_a_cifar_resnet_by_hand():
    """The spaces of CifarResNet(blocks=1) written down from its architecture."""
    model = CifarResNet(blocks=1).eval()
    groups = channel_groups(model, torch.randn(1, 3, 16, 16), include_fixed=True)
    got = {frozenset((m.name, m.dim) for m in g.members if m.parameter): g.fixed for g in groups}

    def norm(prefix):
        return {(f"{prefix}.weight", 0), (f"{prefix}.bias", 0)}
    stream1 = {("conv1.weight", 0), *norm("bn1"), ("layers.0.conv2.weight", 0), *norm("layers.0.bn2"),
               ("layers.0.conv1.weight", 1), ("layers.1.conv1.weight", 1), ("layers.1.shortcut.0.weight", 1)}
    stream2 = {("layers.1.conv2.weight", 0), *norm("layers.1.bn2"), ("layers.1.shortcut.0.weight", 0),
               *norm("layers.1.shortcut.1"), ("layers.2.conv1.weight", 1), ("layers.2.shortcut.0.weight", 1)}
    stream3 = {("layers.2.conv2.weight", 0), *norm("layers.2.bn2"), ("layers.2.shortcut.0.weight", 0),
               *norm("layers.2.shortcut.1"), ("fc.weight", 1)}
    hidden = [{(f"layers.{i}.conv1.weight", 0), *norm(f"layers.{i}.bn1"), (f"layers.{i}.conv2.weight", 1)}
              for i in range(3)]
    expected = {frozenset(s): None for s in [stream1, stream2, stream3, *hidden]}
    expected[frozenset({("fc.weight", 0), ("fc.bias", 0)})] = "reaches the model output"
    assert got == expected
    sizes = {frozenset((m.name, m.dim) for m in g.members if m.parameter): g.size for g in groups}
    assert sizes[frozenset(stream3)] == 32 and sizes[frozenset(hidden[1])] == 16


def test_index_mappings_concat_offsets_flatten_and_depthwise():
    # DenseNet: the stem's channels sit at offset 0 of every concat, the first layer's at 8..11
    model, sizes = build("densenet")
    groups = channel_groups(model, inputs(sizes[0], 0))
    first_new = next(g for g in groups if any(m.name == "blocks.0.0.conv2.weight" and m.role == "out"
                                                for m in g.members))
    reader = next(m for m in first_new.members if m.name == "blocks.0.1.conv1.weight")
    assert reader.dim == 1 and reader.index.flatten().tolist() == [8, 9, 10, 11]
    # flatten → Linear: channel c of the last conv covers features 4c..4c+3 of the classifier
    model, sizes = build("plain")
    groups = channel_groups(model, inputs(sizes[0], 0))
    fc = next(m for g in groups for m in g.members if m.name == "classifier.weight" and m.dim == 1)
    assert fc.index.tolist() == [[4 * c + j for j in range(4)] for c in range(10)]
    # a depthwise conv shares the space of its input (MobileNetV2's expansion → depthwise)
    model, sizes = build("mobilenetv2")
    groups = channel_groups(model, inputs(sizes[0], 0))
    dw = next(g for g in groups if any(m.name == "features.2.conv.1.0.weight" for m in g.members))
    assert {"features.2.conv.0.0.weight", "features.2.conv.1.0.weight",
            "features.2.conv.2.weight"} <= {m.name for m in dw.members}


def test_fixed_spaces_name_their_reason():
    model, sizes = build("convnext")
    groups = channel_groups(model, inputs(sizes[0], 0), include_fixed=True)
    streams = [g for g in groups if any(m.name == "stages.0.1.conv_dw.weight" for m in g.members)]
    assert len(streams) == 1 and "layer_norm" in streams[0].fixed  # LayerNorm statistics
    free = [g for g in groups if g.fixed is None]
    assert {m.name for g in free for m in g.members} == {  # the MLP hidden units can go
        "stages.0.1.mlp.0.weight", "stages.0.1.mlp.0.bias", "stages.0.1.mlp.2.weight",
        "stages.1.1.mlp.0.weight", "stages.1.1.mlp.0.bias", "stages.1.1.mlp.2.weight"}
    model, sizes = build("depthwise")
    groups = channel_groups(model, inputs(sizes[0], 0), include_fixed=True)
    assert any(g.fixed == "read by a grouped conv" for g in groups)


def test_a_split_along_the_channels_keeps_its_spaces_whole():
    torch.manual_seed(0)
    model = randomize(SplitNet())
    x = torch.randn(2, 3, 7, 8, dtype=torch.float64)
    groups = channel_groups(model, x, include_fixed=True)
    space = {m.name: g for g in groups for m in g.members if m.role == "out"}
    assert "split along its channels" in space["a.weight"].fixed and space["b.weight"].fixed
    assert space["c.weight"] is space["d.weight"] and space["c.weight"].fixed is None
