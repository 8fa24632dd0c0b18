"""`build_model(name, ...)`: the model zoo by name, plus torchvision models as "tv:<name>"."""
from __future__ import annotations

import importlib.util
from typing import Callable, Sequence

import torch
from torch import nn

from .cnn import SmallCNN
from .fcn import FCN
from .mlp import MLP
from .resnet import cifar_resnet, resnet18_cifar
from .vgg import VGG
from .wide_resnet import WideResNet

# name → (builder(num_classes, in_channels, image_size), smallest image_size it accepts, size multiple)
_MODELS: dict[str, tuple[Callable[[int, int, int | None], nn.Module], int, int]] = {
    "mlp": (lambda k, c, s: MLP(c * s * s, k), 1, 1),
    "cnn": (lambda k, c, s: SmallCNN(c, k), 4, 1),
    "resnet20": (lambda k, c, s: cifar_resnet(20, c, k), 4, 1),
    "resnet56": (lambda k, c, s: cifar_resnet(56, c, k), 4, 1),
    "resnet18": (lambda k, c, s: resnet18_cifar(c, k), 8, 1),
    "vgg16_bn": (lambda k, c, s: VGG(c, k), 32, 1),
    "wrn28_10": (lambda k, c, s: WideResNet(28, 10, c, k), 4, 1),
    "fcn": (lambda k, c, s: FCN(c, k), 4, 4),
}


def available_models() -> list[str]:
    """Names `build_model` accepts; "tv:<name>" (any torchvision model) is listed as "tv:*" if installed."""
    return list(_MODELS) + (["tv:*"] if importlib.util.find_spec("torchvision") is not None else [])


def _positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an int >= 1, got {name}={value!r}")
    return value


def _torchvision_model(name: str, num_classes: int, in_channels: int) -> nn.Module:
    from ..data.errors import require_torchvision   # the one place that knows the install hint
    tv = require_torchvision()
    if in_channels != 3:
        raise ValueError(f"torchvision models take 3 input channels, got in_channels={in_channels!r}")
    if name not in tv.models.list_models():
        raise ValueError(f"unknown torchvision model name={'tv:' + name!r}")
    return tv.models.get_model(name, weights=None, num_classes=num_classes)


def build_model(name: str, num_classes: int, in_channels: int, image_size: int | None = None,
                seed: int | None = None, widths: Sequence[int] | None = None) -> nn.Module:
    """A freshly initialised model (PyTorch default init; BN γ=1, β=0).

    Classifiers return logits (N, num_classes); "fcn" returns (N, num_classes, H, W). "mlp" needs
    `image_size` (square inputs); others accept any large enough size (global average pooling).
    With `seed`, initialisation uses its own seeded generator and leaves the global RNG untouched.
    `widths` (four positive ints) sets the channel widths of "cnn"; other models take none.
    """
    num_classes = _positive_int("num_classes", num_classes)
    in_channels = _positive_int("in_channels", in_channels)
    if image_size is not None:
        _positive_int("image_size", image_size)
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise ValueError(f"seed must be None or an int, got seed={seed!r}")
    if not isinstance(name, str) or not (name in _MODELS or name.startswith("tv:")):
        raise ValueError(f"unknown model name={name!r}; choose one of {available_models()} or 'tv:<torchvision name>'")
    if name.startswith("tv:"):
        build = lambda: _torchvision_model(name[3:], num_classes, in_channels)  # noqa: E731
    else:
        builder, min_size, multiple = _MODELS[name]
        if name == "mlp" and image_size is None:
            raise ValueError("model 'mlp' needs image_size (it flattens in_channels·image_size² inputs)")
        if image_size is not None and (image_size < min_size or image_size % multiple):
            raise ValueError(f"model {name!r} needs image_size >= {min_size} and a multiple of {multiple}, "
                             f"got image_size={image_size!r}")
        build = lambda: builder(num_classes, in_channels, image_size)  # noqa: E731
    if widths is not None:
        if name != "cnn":
            raise ValueError(f"only model 'cnn' takes widths, got name={name!r}")
        if len(widths) != 4 or any(isinstance(w, bool) or not isinstance(w, int) or w < 1 for w in widths):
            raise ValueError(f"widths must be four positive ints, got widths={widths!r}")
        build = lambda: SmallCNN(in_channels, num_classes, tuple(widths))  # noqa: E731
    if seed is None:
        return build()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()
