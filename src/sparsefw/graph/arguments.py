"""Validation of the model and example-input arguments shared by the graph capture and the
compression functions."""
from __future__ import annotations

import torch
from torch import nn


def check_module(model) -> None:
    """ValueError unless `model` is an nn.Module."""
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be an nn.Module, got {type(model).__name__}")


def as_input_tuple(example_inputs, name: str) -> tuple:
    """A tensor or a tuple/list of tensors → tuple of tensors."""
    inputs = (example_inputs,) if isinstance(example_inputs, torch.Tensor) else example_inputs
    if not isinstance(inputs, (tuple, list)) or not inputs or not all(
            isinstance(x, torch.Tensor) for x in inputs):
        raise ValueError(f"{name} must be a tensor or a non-empty tuple of tensors, "
                         f"got {type(example_inputs).__name__}")
    return tuple(inputs)
