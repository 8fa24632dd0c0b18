"""Helpers shared by the compression functions (argument checks: `sparsefw.graph.arguments`)."""
from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn


def set_submodule(root: nn.Module, name: str, module: nn.Module) -> None:
    """Put `module` at the dotted path `name` of `root` (the parent must exist)."""
    parent_name, _, leaf = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, leaf, module)


def run_compressed(model: nn.Module, inputs: tuple, what: str, changed: Iterable[str], hint: str = ""):
    """The output of one eval, no-grad forward of `model` (made by `what`) on `inputs`.

    If it raises, a ValueError names the innermost module whose forward was running (a module
    hook stack: entered, not yet left), its type, the layers of `changed` inside it and the
    exception, which is chained as the cause; `hint` is appended. Training flags are restored.
    """
    names = {}
    for name, module in model.named_modules():
        names.setdefault(module, name)
    running: list[nn.Module] = []

    def enter(module, args) -> None:
        running.append(module)

    def leave(module, args, out) -> None:
        running.pop()

    handles = [h for m in names for h in (m.register_forward_pre_hook(enter), m.register_forward_hook(leave))]
    flags = [(m, m.training) for m in model.modules()]
    try:
        with torch.no_grad():
            return model.eval()(*inputs)
    except Exception as exc:
        module = running[-1] if running else model
        where = names[module]
        inside = [n for n in changed if where == "" or n == where or n.startswith(where + ".")]
        place = f"module {where!r}" if where else "the model's own forward"
        raise ValueError(
            f"{what}: the compressed model fails on example_inputs in {place} "
            f"({type(module).__name__}; compressed layers there: {listed(inside) or 'none'}): "
            f"{type(exc).__name__}: {exc}" + (f"; {hint}" if hint else "")) from exc
    finally:
        for m, flag in flags:
            m.training = flag
        for handle in handles:
            handle.remove()


def listed(items: Iterable[str], limit: int = 5) -> str:
    """The first `limit` items joined by commas, then how many more there are."""
    items = list(items)
    more = f" and {len(items) - limit} more" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more
