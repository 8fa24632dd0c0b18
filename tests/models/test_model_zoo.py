"""Every model builds, maps inputs to the right output shape, traces with torch.fx to the same
function, uses PyTorch's default initialisation, and has the parameter count its architecture implies."""
import importlib.util
import math

import pytest
import torch
import torch.fx
from torch import nn

from sparsefw.models import available_models, build_model, check_model_option, model_options

# name → (num_classes, in_channels, image_size, expected output shape for a batch of 1)
CASES = {
    "mlp": (10, 1, 28, (1, 10)),
    "cnn": (10, 1, 28, (1, 10)),
    "resnet20": (10, 3, 32, (1, 10)),
    "resnet56": (10, 3, 32, (1, 10)),
    "resnet18": (10, 3, 32, (1, 10)),
    "vgg16_bn": (100, 3, 32, (1, 100)),
    "wrn28_10": (100, 3, 32, (1, 100)),
    "fcn": (11, 1, 64, (1, 11, 64, 64)),
    "unet": (11, 1, 64, (1, 11, 64, 64)),
    "vit": (10, 1, 28, (1, 10)),
    "gpt": (97, 1, 64, (1, 64, 97)),        # (vocab, -, context): token ids in, next-token logits out
    "resnet50": (1000, 3, 32, (1, 1000)),
    "mobilenet_v2": (1000, 3, 32, (1, 1000)),
}


def example_input(name, channels, size, classes=97, batch=1):
    """Images (batch, channels, size, size), or for the language model "gpt" token ids (batch, size)."""
    g = torch.Generator().manual_seed(1)
    if name == "gpt":
        return torch.randint(0, classes, (batch, size), generator=g)
    return torch.randn(batch, channels, size, size, generator=g)


def n_params(model):
    return sum(p.numel() for p in model.parameters())


def test_every_listed_model_is_covered():
    assert set(available_models()) - {"tv:*"} == set(CASES)


@pytest.mark.parametrize("name", CASES)
def test_forward_shape_and_fx_trace(name):
    classes, channels, size, out_shape = CASES[name]
    model = build_model(name, classes, channels, size, seed=0).eval()
    x = example_input(name, channels, size, classes)
    traced = torch.fx.symbolic_trace(model)
    with torch.no_grad():
        y = model(x)
        assert y.shape == out_shape and torch.isfinite(y).all()
        torch.testing.assert_close(traced(x), y, rtol=0, atol=0)
    assert any(n.op == "call_module" for n in traced.graph.nodes)


@pytest.mark.parametrize("name", ["cnn", "resnet20", "fcn", "unet"])
def test_default_init(name):
    """kaiming_uniform(a=√5): |w| ≤ 1/√fan_in for conv/linear weights; BN γ = 1, β = 0."""
    classes, channels, size, _ = CASES[name]
    for m in build_model(name, classes, channels, size, seed=3).modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            bound = 1 / math.sqrt(m.weight[0].numel())
            assert m.weight.abs().max() <= bound and m.weight.abs().max() > 0.9 * bound
        elif isinstance(m, nn.BatchNorm2d):
            assert (m.weight == 1).all() and (m.bias == 0).all()


def cifar_resnet_params(n, classes=10, projection=True):
    """Count of ResNet-(6n+2) worked out from its layers: 3×3 convs, BN (γ, β), Linear."""
    convs = 3 * 16 * 9 + 2 * n * 16 * 16 * 9                    # stem, stage 1
    convs += 16 * 32 * 9 + (2 * n - 1) * 32 * 32 * 9            # stage 2
    convs += 32 * 64 * 9 + (2 * n - 1) * 64 * 64 * 9            # stage 3
    bns = 2 * (16 + 2 * n * (16 + 32 + 64))
    shortcuts = (16 * 32 + 2 * 32) + (32 * 64 + 2 * 64) if projection else 0
    return convs + bns + 64 * classes + classes + shortcuts


def test_parameter_counts():
    assert n_params(build_model("mlp", 10, 1, 28)) == 784 * 300 + 300 + 300 * 100 + 100 + 100 * 10 + 10 == 266_610
    r20, r56 = build_model("resnet20", 10, 3), build_model("resnet56", 10, 3)
    assert n_params(r20) == cifar_resnet_params(3) == 272_474
    assert n_params(r56) == cifar_resnet_params(9) == 855_770
    # the published option-A counts (0.27M, 0.85M) are the same nets minus the two projections
    assert cifar_resnet_params(3, projection=False) == 269_722
    assert cifar_resnet_params(9, projection=False) == 853_018
    projections = [m for m in r20.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1)]
    assert [tuple(p.weight.shape) for p in projections] == [(32, 16, 1, 1), (64, 32, 1, 1)]
    assert n_params(build_model("resnet18", 10, 3)) == pytest.approx(11.17e6, rel=2e-3)
    assert n_params(build_model("wrn28_10", 100, 3)) == pytest.approx(36.5e6, rel=3e-3)
    widths = [3, 64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512]
    convs_vgg = sum(a * b * 9 for a, b in zip(widths[:-1], widths[1:]))
    bn_vgg = 2 * (2 * 64 + 2 * 128 + 3 * 256 + 6 * 512)
    assert n_params(build_model("vgg16_bn", 10, 3)) == convs_vgg + bn_vgg + 512 * 10 + 10


def test_imagenet_layouts_have_torchvisions_parameter_counts():
    assert n_params(build_model("resnet50", 1000, 3)) == 25_557_032
    assert n_params(build_model("mobilenet_v2", 1000, 3)) == 3_504_872


@pytest.mark.parametrize("name", ["resnet50", "mobilenet_v2"])
def test_channels_map_builds_the_widths_coupled_removal_leaves(name):
    from sparsefw.compress import remove_filters
    from sparsefw.models import BottleneckResNet, MobileNetV2
    build = (lambda **kw: BottleneckResNet(3, 10, base=8, blocks=(1, 2, 1, 1), **kw)) if name == "resnet50" else \
        (lambda **kw: MobileNetV2(3, 10, **kw))
    torch.manual_seed(0)
    removed = remove_filters(build().eval(), 0.5, torch.randn(1, 3, 32, 32), coupled=True)
    native = build(channels=lambda c: c - c // 2)
    shapes = lambda m: sorted(tuple(x.shape) for x in m.parameters())  # noqa: E731
    assert shapes(removed) == shapes(native)


def test_seed_is_reproducible_and_isolated():
    state = torch.random.get_rng_state()
    a, b = build_model("cnn", 10, 1, seed=5), build_model("cnn", 10, 1, seed=5)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    c = build_model("cnn", 10, 1, seed=6)
    assert not torch.equal(a.classifier.weight, c.classifier.weight)


def test_other_input_sizes():
    assert build_model("resnet20", 5, 1, seed=0)(torch.randn(2, 1, 28, 28)).shape == (2, 5)
    assert build_model("fcn", 3, 3, seed=0)(torch.randn(1, 3, 32, 48)).shape == (1, 3, 32, 48)
    assert build_model("unet", 3, 3, seed=0)(torch.randn(1, 3, 20, 12)).shape == (1, 3, 20, 12)


def test_validation():
    with pytest.raises(ValueError, match="name='resnet21'"):
        build_model("resnet21", 10, 3)
    with pytest.raises(ValueError, match="image_size"):
        build_model("mlp", 10, 1)
    with pytest.raises(ValueError, match="image_size=30"):
        build_model("fcn", 11, 1, 30)
    with pytest.raises(ValueError, match="image_size=18"):
        build_model("unet", 11, 1, 18)
    with pytest.raises(ValueError, match="image_size=16"):
        build_model("vgg16_bn", 10, 3, 16)
    for kw, arg in [({"num_classes": 0}, "num_classes"), ({"in_channels": 2.0}, "in_channels"),
                    ({"seed": "1"}, "seed")]:
        args = {"name": "cnn", "num_classes": 10, "in_channels": 1, **kw}
        with pytest.raises(ValueError, match=arg):
            build_model(**args)


@pytest.mark.skipif(importlib.util.find_spec("torchvision") is not None, reason="torchvision is installed")
def test_torchvision_models_need_the_extra():
    with pytest.raises(ImportError, match=r"pip install sparsefw\[vision\]"):
        build_model("tv:resnet50", 1000, 3)


def test_cnn_widths_set_the_conv_channels_and_bad_widths_are_refused():
    model = build_model("cnn", 10, 1, widths=[4, 5, 6, 7], seed=0)
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [4, 5, 6, 7] and model.classifier.in_features == 7
    same = build_model("cnn", 10, 1, widths=[4, 5, 6, 7], seed=0)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), same.state_dict().values()))
    with pytest.raises(ValueError, match=r"model 'mlp' takes no option 'widths' \(its options: hidden\)"):
        build_model("mlp", 10, 1, image_size=28, widths=[4, 4, 8, 8])
    with pytest.raises(ValueError, match=r"widths must be four positive ints, got widths=\[4, 0, 8, 8\]"):
        build_model("cnn", 10, 1, widths=[4, 0, 8, 8])


def test_fcn_widths_and_mlp_hidden_set_their_layers():
    fcn = build_model("fcn", 11, 1, 16, widths=(3, 5, 7))
    assert [m.out_channels for m in fcn.modules() if isinstance(m, nn.Conv2d)] == [3, 5, 7, 7, 5, 3, 11]
    mlp = build_model("mlp", 10, 1, 28, hidden=[20])
    assert [m.out_features for m in mlp.modules() if isinstance(m, nn.Linear)] == [20, 10]
    assert build_model("fcn", 11, 1, 16, widths=None).classifier.in_channels == 32      # None: the default
    with pytest.raises(ValueError, match=r"widths must be three positive ints, got widths=\[3, 5, 7, 9\]"):
        build_model("fcn", 11, 1, 16, widths=[3, 5, 7, 9])
    with pytest.raises(ValueError, match=r"model 'resnet20' takes no option 'widths' \(its options: none\)"):
        build_model("resnet20", 10, 3, widths=[16, 32, 64])


@pytest.mark.parametrize("name", CASES)
def test_declared_options_are_keyword_arguments_of_ints_or_tuples_of_ints_whose_defaults_pass(name):
    """What `check_model_option` can judge: every declared option is a parameter of the model's class,
    annotated as an int or a tuple of ints, whose default it accepts."""
    import inspect
    import typing
    model = build_model(name, *CASES[name][:3])
    parameters = inspect.signature(type(model)).parameters
    for option, annotation in model_options(name).items():
        default = parameters[option].default
        if annotation is int:
            assert check_model_option(name, option, default) == default
            continue
        assert typing.get_origin(annotation) is tuple and set(typing.get_args(annotation)) - {Ellipsis} == {int}
        assert check_model_option(name, option, list(default)) == default


def test_unet_widths_skip_concatenations_and_dilation():
    """Encoder 3-5-7-7 (the last at dilation 2), decoder convs reading upsampled + skip channels."""
    unet = build_model("unet", 11, 2, 16, widths=(3, 5, 7), seed=0)
    convs = [m for m in unet.modules() if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels) for c in convs] == [(2, 3), (3, 5), (5, 7), (7, 7), (12, 5), (8, 3),
                                                                 (3, 11)]
    assert [c.dilation for c in convs[:4]] == [(1, 1)] * 3 + [(2, 2)] and convs[3].padding == (2, 2)
    convs_bn = 9 * (2 * 3 + 3 * 5 + 5 * 7 + 7 * 7 + 12 * 5 + 8 * 3) + 2 * (3 + 5 + 7 + 7 + 5 + 3)
    assert n_params(unet) == convs_bn + 3 * 11 + 11
