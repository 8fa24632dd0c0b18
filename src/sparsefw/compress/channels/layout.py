"""Channel layouts of the per-layer pass and the fx-graph predicates its rules use."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import fx, nn


@dataclass(frozen=True)
class Layout:
    """Channels (dim 1) of a tensor: `kept` (ascending original indices) are physically present in
    that order; every other channel c equals `const[c]` everywhere (entries at `kept` are 0)."""

    kept: torch.Tensor
    const: torch.Tensor

    @property
    def size(self) -> int:
        return self.const.numel()



def no_nodes(items) -> bool:
    found = []
    fx.node.map_arg(items, found.append)
    return not found


def present_mask(layout: Layout) -> torch.Tensor:
    present = torch.zeros(layout.size, dtype=torch.bool, device=layout.kept.device)
    present[layout.kept] = True
    return present


def meta_shape(node) -> tuple | None:
    meta = node.meta.get("tensor_meta") if isinstance(node, fx.Node) else None
    return tuple(meta.shape) if meta is not None and hasattr(meta, "shape") else None


def zero_padded(conv: nn.Conv2d) -> bool:
    if conv.padding_mode != "zeros":
        return False
    if isinstance(conv.padding, str):
        return conv.padding == "same" and any(
            (k - 1) * d > 0 for k, d in zip(conv.kernel_size, conv.dilation))
    return any(p > 0 for p in conv.padding)


def avg_pool_keeps_constants(pool) -> bool:
    padding = pool.padding if isinstance(pool.padding, tuple) else (pool.padding,)
    no_pad = all(p == 0 for p in padding)
    return getattr(pool, "divisor_override", None) is None and (
        (no_pad and not pool.ceil_mode) or not pool.count_include_pad)


def flatten_from_1(args, kwargs) -> bool:
    start = args[0] if args else kwargs.get("start_dim", 0)
    end = args[1] if len(args) > 1 else kwargs.get("end_dim", -1)
    return start == 1 and end == -1


def is_batch_flatten(node: fx.Node) -> bool:
    """view/reshape(x, batch, -1) of a ≥3-d tensor: the same as flatten(x, 1)."""
    shape = node.args[1:]
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = tuple(shape[0])
    in_shape, out_shape = meta_shape(node.args[0]), meta_shape(node)
    return (len(shape) == 2 and shape[1] == -1 and in_shape is not None and len(in_shape) >= 3
            and out_shape is not None and len(out_shape) == 2 and out_shape[0] == in_shape[0])


def spatial_reduction(node: fx.Node) -> bool:
    """mean/amax over dims that exclude the channel dim 1."""
    dims = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
    in_shape = meta_shape(node.args[0])
    if dims is None or in_shape is None or len(node.args) > 3:
        return False
    dims = dims if isinstance(dims, (tuple, list)) else (dims,)
    return all(isinstance(d, int) and d % len(in_shape) >= 2 for d in dims)
