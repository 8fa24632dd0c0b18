"""`build_model(name, ...)`: the model zoo by name, plus torchvision models as "tv:<name>"."""
from __future__ import annotations

import importlib.util
import inspect
import typing
from typing import Any, Callable, NamedTuple

import torch
from torch import nn

from ._checks import positive_int
from .cnn import SmallCNN
from .fcn import FCN
from .imagenet import BottleneckResNet, MobileNetV2
from .mlp import MLP
from .resnet import cifar_resnet, resnet18_cifar
from .transformer import GPT, ViT
from .unet import UNet
from .vgg import VGG
from .wide_resnet import WideResNet


class _Model(NamedTuple):
    cls: Callable[..., nn.Module]                  # the class (or function) that builds it
    args: Callable[[int, int, int | None], tuple]  # its leading arguments from (num_classes, in_channels, image_size)
    options: tuple[str, ...] = ()                  # its keyword arguments callers may set: positive ints or tuples of them
    min_size: int = 4                              # smallest image_size it accepts
    multiple: int = 1                              # image_size must be a multiple of this


_MODELS: dict[str, _Model] = {
    "mlp": _Model(MLP, lambda k, c, s: (c * s * s, k), ("hidden",), min_size=1),
    "cnn": _Model(SmallCNN, lambda k, c, s: (c, k), ("widths",)),
    "resnet20": _Model(cifar_resnet, lambda k, c, s: (20, c, k)),
    "resnet56": _Model(cifar_resnet, lambda k, c, s: (56, c, k)),
    "resnet18": _Model(resnet18_cifar, lambda k, c, s: (c, k), min_size=8),
    "vgg16_bn": _Model(VGG, lambda k, c, s: (c, k), min_size=32),
    "wrn28_10": _Model(WideResNet, lambda k, c, s: (28, 10, c, k)),
    "fcn": _Model(FCN, lambda k, c, s: (c, k), ("widths",), multiple=4),
    "unet": _Model(UNet, lambda k, c, s: (c, k), ("widths",), multiple=4),
    "vit": _Model(ViT, lambda k, c, s: (k, c, s), ("patch", "dim", "depth", "heads", "mlp"), min_size=1),
    "gpt": _Model(GPT, lambda k, c, s: (k, s), ("dim", "depth", "heads", "mlp"), min_size=1),
    "resnet50": _Model(BottleneckResNet, lambda k, c, s: (c, k), min_size=32),
    "mobilenet_v2": _Model(MobileNetV2, lambda k, c, s: (c, k), min_size=32),
}
_NEEDS_SIZE = {"mlp": "it flattens in_channels·image_size² inputs", "vit": "its position embedding has one row per patch",
               "gpt": "image_size is its context length, the rows of its position embedding"}
_NUMBERS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


def available_models() -> list[str]:
    """Names `build_model` accepts; "tv:<name>" (any torchvision model) is listed as "tv:*" if installed."""
    return list(_MODELS) + (["tv:*"] if importlib.util.find_spec("torchvision") is not None else [])


def _torchvision_model(name: str, num_classes: int, in_channels: int) -> nn.Module:
    from ..data.errors import require_torchvision   # the one place that knows the install hint
    tv = require_torchvision()
    if in_channels != 3:
        raise ValueError(f"torchvision models take 3 input channels, got in_channels={in_channels!r}")
    if name not in tv.models.list_models():
        raise ValueError(f"unknown torchvision model name={'tv:' + name!r}")
    return tv.models.get_model(name, weights=None, num_classes=num_classes)


def _check_name(name: Any) -> None:
    if not isinstance(name, str) or not (name in _MODELS or name.startswith("tv:")):
        raise ValueError(f"unknown model name={name!r}; choose one of {available_models()} or 'tv:<torchvision name>'")


def model_options(name: str) -> dict[str, Any]:
    """The keyword options `build_model` takes for model `name`: {option: its annotation in the model's
    signature}, e.g. {"widths": tuple[int, int, int, int]} for "cnn", {"dim": int, "depth": int, "heads": int,
    "mlp": int} for "gpt"; {} for a torchvision model."""
    _check_name(name)
    if name.startswith("tv:"):
        return {}
    model = _MODELS[name]
    parameters = inspect.signature(model.cls, eval_str=True).parameters
    return {option: parameters[option].annotation for option in model.options}


def check_model_option(name: str, option: str, value: Any) -> tuple[int, ...] | int:
    """`value` as option `option` of model `name`, or ValueError: one the model does not take (naming
    those it does), or a value not of the option's shape (a positive int, or a tuple of positive ints,
    fixed or any length)."""
    options = model_options(name)
    if option not in options:
        raise ValueError(f"model {name!r} takes no option {option!r} (its options: {', '.join(options) or 'none'})")
    if options[option] is int:
        return positive_int(option, value)
    args = typing.get_args(options[option])
    n = None if args[-1] is Ellipsis else len(args)
    if (not isinstance(value, (list, tuple)) or not value or (n is not None and len(value) != n)
            or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in value)):
        count = "one or more" if n is None else _NUMBERS[n] if n < len(_NUMBERS) else str(n)
        raise ValueError(f"{option} must be {count} positive ints, got {option}={value!r}")
    return tuple(value)


def build_model(name: str, num_classes: int, in_channels: int, image_size: int | None = None,
                seed: int | None = None, **options: Any) -> nn.Module:
    """A freshly initialised model (PyTorch default init; BN γ=1, β=0; "vit" and "gpt": Hugging Face's init).

    Classifiers return logits (N, num_classes); "fcn" and "unet" return (N, num_classes, H, W). "mlp" and
    "vit" need `image_size` (square inputs; "vit": a multiple of its patch); others accept any large
    enough size (global average pooling). "gpt" is a language model: num_classes is the vocabulary size,
    image_size the context length (in_channels is not used); it maps int64 token ids (N, T ≤ image_size)
    to logits (N, T, num_classes).
    With `seed`, initialisation uses its own seeded generator and leaves the global RNG untouched.
    `options` are the model's own keyword arguments (`model_options(name)`): widths (four ints) of
    "cnn", widths (three) of "fcn" and "unet", hidden (the layer sizes) of "mlp"; the ints dim, depth,
    heads, mlp of "vit" (and patch) and "gpt"; None keeps the default.
    """
    num_classes = positive_int("num_classes", num_classes)
    in_channels = positive_int("in_channels", in_channels)
    if image_size is not None:
        positive_int("image_size", image_size)
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise ValueError(f"seed must be None or an int, got seed={seed!r}")
    _check_name(name)
    options = {o: check_model_option(name, o, v) for o, v in options.items() if v is not None}
    if name.startswith("tv:"):
        build = lambda: _torchvision_model(name[3:], num_classes, in_channels)  # noqa: E731
    else:
        model = _MODELS[name]
        if name in _NEEDS_SIZE and image_size is None:
            raise ValueError(f"model {name!r} needs image_size ({_NEEDS_SIZE[name]})")
        if image_size is not None and (image_size < model.min_size or image_size % model.multiple):
            raise ValueError(f"model {name!r} needs image_size >= {model.min_size} and a multiple of "
                             f"{model.multiple}, got image_size={image_size!r}")
        build = lambda: model.cls(*model.args(num_classes, in_channels, image_size), **options)  # noqa: E731
    if seed is None:
        return build()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()
