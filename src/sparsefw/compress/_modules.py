"""Small modules that `remove_filters` inserts into a compressed graph.

Both hold only buffers derived from the original weights, so a compressed checkpoint is a plain
state_dict and `rebuild` can recreate them from a recipe.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Assemble(nn.Module):
    """Gather channels (dim 1) of a channel-reduced tensor into a wider channel set.

    out[:, j] = x[:, index[j]]      where the target channel j is physically present,
    out[:, j] = fill[j]             where it was removed (a channel-wise constant).
    Built with `has_fill=False` it is a plain `index_select` (target ⊂ present channels).
    """

    def __init__(self, index: torch.Tensor, is_fill: torch.Tensor | None = None,
                 fill: torch.Tensor | None = None):
        super().__init__()
        self.register_buffer("index", index)
        self.register_buffer("is_fill", is_fill)
        self.register_buffer("fill", fill)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x.index_select(1, self.index)
        if self.fill is None:
            return y
        shape = (1, -1) + (1,) * (x.dim() - 2)
        return torch.where(self.is_fill.view(shape), self.fill.view(shape).to(y.dtype), y)


class BorderCorrection(nn.Module):
    """Add what removed constant input channels contribute to a zero-padded conv.

    A removed input channel c that carries the constant a_c adds, to output o,
    (Σ_c a_c·W[o, c]) ⋆ 1_image: the constant Σ a_c·ΣW[o,c] inside and less near the border, where
    the zero padding is seen. `kernel[o] = Σ_c a_c·W[o, c]` (shape c_out × 1 × kh × kw); the map is
    computed as conv(ones(1, 1, H, W), kernel) — exact for any input size, at the cost of one
    single-input-channel conv (≈ 1/c_in of the layer's multiply-adds). In eager mode the map is
    cached per (size, dtype, device, kernel version), so repeated calls at one size only add it;
    under tracing/compilation it is recomputed in the graph.
    """

    def __init__(self, kernel: torch.Tensor, stride, padding, dilation):
        super().__init__()
        self.register_buffer("kernel", kernel)
        self.stride, self.padding, self.dilation = stride, padding, dilation
        self._cache: tuple | None = None

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if torch.jit.is_tracing() or torch.compiler.is_compiling() or not _is_plain(x):
            return y + self._border_map(x)
        key = (tuple(x.shape[2:]), x.dtype, x.device, self.kernel._version, self.kernel.data_ptr())
        if self._cache is None or self._cache[0] != key:
            with torch.no_grad():
                self._cache = (key, self._border_map(x))
        return y + self._cache[1]

    def _border_map(self, x: torch.Tensor) -> torch.Tensor:
        ones = torch.ones_like(x[:1, :1])
        return F.conv2d(ones, self.kernel, None, self.stride, self.padding, self.dilation)

    def __getstate__(self):
        state = super().__getstate__()
        return {**state, "_cache": None}


def _is_plain(x: torch.Tensor) -> bool:
    """A real eager tensor (not a fake/meta/subclass tensor used by tracers or flop counters)."""
    return type(x) is torch.Tensor and x.device.type != "meta"
