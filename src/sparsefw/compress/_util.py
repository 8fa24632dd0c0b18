"""Helpers shared by the compression functions (argument checks: `sparsefw.graph.arguments`)."""
from __future__ import annotations

from torch import nn


def set_submodule(root: nn.Module, name: str, module: nn.Module) -> None:
    """Put `module` at the dotted path `name` of `root` (the parent must exist)."""
    parent_name, _, leaf = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, leaf, module)
