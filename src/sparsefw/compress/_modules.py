"""Small modules that compression inserts into a model.

`Assemble` and `BorderCorrection` (filter removal) hold only buffers derived from the original
weights; the composed layers `FactorizedLinear`, `FactorizedConv2d` (factorize) and `ReducedConv2d`
(the in-place filter removal) replace a layer by two stages while remaining an instance of its type
and answering its attributes. So a compressed checkpoint is a plain state_dict and `rebuild` can
recreate all of them from a recipe.
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


def is_conv1d(module: nn.Module) -> bool:
    """Hugging Face's Conv1D (GPT-2): class name "Conv1D", a 2-D `weight` stored (in, out) = (nx, nf),
    y = x @ W + b."""
    weight = getattr(module, "weight", None)
    return (type(module).__name__ == "Conv1D" and isinstance(weight, torch.Tensor) and weight.dim() == 2
            and getattr(module, "nf", None) == weight.shape[1])


def _is_plain(x: torch.Tensor) -> bool:
    """A real eager tensor (not a fake/meta/subclass tensor used by tracers or flop counters)."""
    return type(x) is torch.Tensor and x.device.type != "meta"


class ComposedLayer(nn.Module):
    """A layer computed by two child modules in turn, x ↦ second(first(x)).

    The children are registered as "0" and "1", the state_dict keys of the `nn.Sequential` such a
    layer used to be, so those checkpoints still load. Subclasses also derive from the layer type
    they replace (`FactorizedConv2d` is an `nn.Conv2d`) and answer its attributes, so forwards that
    read `layer.weight.dtype`, `conv.stride` or `linear.in_features` keep working; `weight` and
    `bias` are derived from the children on every read (nothing is stored twice, so parameter
    counts, the state_dict and gradients see only the children).
    """

    def __init__(self, first: nn.Module, second: nn.Module):
        nn.Module.__init__(self)
        self.add_module("0", first)
        self.add_module("1", second)
        self.train(first.training)

    @property
    def first(self) -> nn.Module:
        return self._modules["0"]

    @property
    def second(self) -> nn.Module:
        return self._modules["1"]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.second(self.first(x))


# Conv2d attributes the first stage holds with the layer's own values (the one source of this list)
_CONV_ATTRIBUTES = ("kernel_size", "stride", "padding", "dilation", "groups", "padding_mode",
                    "transposed", "output_padding", "_reversed_padding_repeated_twice")


def _of_first(name: str) -> property:
    return property(lambda self: getattr(self.first, name),
                    doc=f"`{name}` of the layer (its first stage's).")


class _ConvOfFirst(ComposedLayer):
    """A composed conv whose first stage is a Conv2d with the layer's kernel, stride, padding,
    dilation, groups and padding mode."""

    in_channels = property(lambda self: self.first.in_channels)


for _name in _CONV_ATTRIBUTES:
    setattr(_ConvOfFirst, _name, _of_first(_name))


class FactorizedLinear(ComposedLayer, nn.Linear):
    """A rank-r Linear y = U(Vx) + b: `first` Linear(in → r, no bias) holds V = Σ_r V_rᵀ, `second`
    Linear(r → out) holds U = U_r and the bias.

    `weight` is the dense U·V (out × in), computed on every read: r·out·in multiply-adds and one
    out × in tensor, differentiable in U and V. A forward that only reads its dtype or device pays
    that once per call; one that computes with it (nn.MultiheadAttention passes out_proj.weight to
    F.linear) gets exactly the layer's function, at the dense layer's cost plus the product.
    """

    in_features = property(lambda self: self.first.in_features)
    out_features = property(lambda self: self.second.out_features)

    @property
    def weight(self) -> torch.Tensor:
        return self.second.weight @ self.first.weight

    @property
    def bias(self) -> torch.Tensor | None:
        return self.second.bias


class FactorizedConv1D(ComposedLayer):
    """A rank-r Hugging Face Conv1D (y = x·W + b, W stored (nx, nf)): `first` Linear(nx → r, no bias),
    `second` Linear(r → nf) with the bias. Answers `nf`, `nx` and `weight`, the dense (nx, nf)
    product (V_rᵀ Σ_r U_rᵀ) computed on every read."""

    nf = property(lambda self: self.second.out_features)
    nx = property(lambda self: self.first.in_features)

    @property
    def weight(self) -> torch.Tensor:
        return (self.second.weight @ self.first.weight).t()

    @property
    def bias(self) -> torch.Tensor | None:
        return self.second.bias


class FactorizedConv2d(_ConvOfFirst, nn.Conv2d):
    """A rank-r conv with g groups: `first` a kh×kw conv with g·r filters Σ_r V_rᵀ (the layer's
    stride, padding, dilation, padding mode and groups, no bias), `second` a 1×1 conv with groups g
    holding U_r and the bias.

    `weight` is the dense (c_out, c_in/g, kh, kw) weight W_j = U_j·(Σ V_jᵀ) of every group j,
    computed on every read: g·r·m·n multiply-adds (m = c_out/g, n = c_in/g·kh·kw) and one tensor of
    the dense weight's size, differentiable in the factors; F.conv2d with it and the layer's
    attributes computes the layer's function.
    """

    out_channels = property(lambda self: self.second.out_channels)

    @property
    def weight(self) -> torch.Tensor:
        v, u, g = self.first.weight, self.second.weight, self.groups
        w = torch.bmm(u.reshape(g, u.shape[0] // g, -1), v.reshape(g, v.shape[0] // g, -1))
        return w.reshape(u.shape[0], *v.shape[1:])

    @property
    def bias(self) -> torch.Tensor | None:
        return self.second.bias


class ReducedConv2d(_ConvOfFirst, nn.Conv2d):
    """A conv (groups 1) computing only its kept filters: `first` the conv of those filters,
    `second` an `Assemble` putting every removed filter back as the constant it emits in the
    `ln_structured`-masked model (its bias, or 0). Exactly the masked conv.

    `weight` is the masked weight (c_out × c_in × kh × kw, zeros in the removed filters) and `bias`
    the full bias, both assembled on every read: a copy of the kept filters into a zero tensor of
    the dense weight's size, no arithmetic.
    """

    out_channels = property(lambda self: self.second.index.numel())

    @property
    def weight(self) -> torch.Tensor:
        w, assemble = self.first.weight, self.second
        full = w.new_zeros((self.out_channels, *w.shape[1:]))
        return full.index_copy(0, assemble._present_targets, w.index_select(0, assemble._present_sources))

    @property
    def bias(self) -> torch.Tensor | None:
        b, assemble = self.first.bias, self.second
        if b is None:
            return None
        return assemble.fill.index_copy(0, assemble._present_targets, b.index_select(0, assemble._present_sources))
