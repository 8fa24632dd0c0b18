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
    With fills, the output is written once: the present channels scattered to their targets
    (`index_copy`), the removed ones set to their constants — no full-width gather and select.
    """

    def __init__(self, index: torch.Tensor, is_fill: torch.Tensor | None = None,
                 fill: torch.Tensor | None = None):
        super().__init__()
        self.register_buffer("index", index)
        self.register_buffer("is_fill", is_fill)
        self.register_buffer("fill", fill)
        self._fill_cache: tuple | None = None
        if is_fill is not None:
            targets, sources = torch.arange(index.numel(), device=index.device), index[~is_fill]
            self.register_buffer("_present_targets", targets[~is_fill], persistent=False)
            self.register_buffer("_present_sources", sources, persistent=False)
            self.register_buffer("_fill_targets", targets[is_fill], persistent=False)
            self._sources_in_order = bool((sources == torch.arange(sources.numel(), device=index.device)).all())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fill is None:
            return x.index_select(1, self.index)
        in_order = self._sources_in_order and self._present_sources.numel() == x.shape[1]
        present = x if in_order else x.index_select(1, self._present_sources)
        out = x.new_empty((x.shape[0], self.index.numel()) + tuple(x.shape[2:]))
        out.index_copy_(1, self._present_targets, present)
        return out.index_copy_(1, self._fill_targets, self._fill_values(x).expand(
            (x.shape[0], -1) + tuple(x.shape[2:])))

    def _fill_values(self, x: torch.Tensor) -> torch.Tensor:
        """fill[fill targets] shaped (1, n, 1, ...) in x's dtype; cached in eager mode per (ndim,
        dtype, device, fill version) — one op fewer per call at batch 1, where op count is time."""
        shape = (1, -1) + (1,) * (x.dim() - 2)
        if torch.jit.is_tracing() or torch.compiler.is_compiling() or type(x) is not torch.Tensor:
            return self.fill[self._fill_targets].view(shape).to(x.dtype)
        key = (x.dim(), x.dtype, x.device, self.fill._version, self.fill.data_ptr())
        if self._fill_cache is None or self._fill_cache[0] != key:
            with torch.no_grad():
                self._fill_cache = (key, self.fill[self._fill_targets].view(shape).to(x.dtype))
        return self._fill_cache[1]

    def __getstate__(self):
        return {**super().__getstate__(), "_fill_cache": None}


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
