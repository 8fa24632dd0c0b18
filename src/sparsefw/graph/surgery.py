"""Coupled surgery: remove channels from every member of their space, in the user's own model.

A copy of the model keeps its class, methods, attributes and forward; each sliced parameter or
buffer is replaced by its kept rows/columns (`index_select` along every dim it is indexed on) and
the module that owns it gets its size attributes updated (`FIXERS`: Conv, ConvTranspose, Linear,
BatchNorm, LayerNorm, GroupNorm, and any module with a 2-D weight and `nf` (Hugging Face's Conv1D,
weight (in, out) = (nx, nf)). A plan is a dict {tensor name: {dim: kept indices}}: it is the
recipe, so `rebuild` needs no graph.

Attention heads: the forward reads head counts from attributes. For every space of heads (or of
parts of a fused projection split by the forward) that loses units, the lowest module owning all its
members — the attention module — and its `config` get every attribute of `HEAD_ATTRIBUTES` that
counts whole units rescaled: v → (v / S)·S' for a space of S units keeping S' (num_heads 12 → 6,
all_head_size 768 → 384, num_key_value_heads 4 → 2; head_dim and num_key_value_groups are per
head and stay; a config without head_dim gets it written, hidden_size // num_attention_heads, which
Hugging Face would otherwise derive from the patched count). These patches, {module name: {attribute: value}} ("config.x" for a config field),
are part of the recipe. Whether a forward follows them is tried (`follows_removal`): the analysis
keeps whole a space of heads or split parts whose removal the forward does not follow.
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from .attention import HeadedMultiheadAttention, supports_heads
from .capture import output_tensors
from .groups import ChannelGroup


#: the integer attributes that count heads or their total width; patched on head removal
HEAD_ATTRIBUTES = ("num_heads", "n_head", "n_heads", "heads", "num_attention_heads",
                   "num_key_value_heads", "num_kv_heads", "n_kv_heads", "n_kv_head",
                   "all_head_size", "inner_dim", "split_size")


def plan_removal(model: nn.Module, groups: list[ChannelGroup], amount: float,
                 criterion: str) -> dict[str, dict[int, list[int]]]:
    """Remove ⌊amount·C⌋ channels of lowest joint norm from every group of C channels (ties: the
    higher index goes first); returns the kept indices of every (tensor, dim) touched."""
    removed = []
    for group in groups:
        n_remove = int(amount * group.size)
        if n_remove > 0:
            norms = group.joint_norms(model, criterion).cpu()
            removed.append((group, torch.sort(norms, descending=True, stable=True).indices[group.size - n_remove:]))
    return _plan(model, removed)


def _plan(model: nn.Module, removed: list[tuple[ChannelGroup, torch.Tensor]]) -> dict[str, dict[int, list[int]]]:
    """The kept indices of every (tensor, dim) touched when each group loses its `removed` units."""
    sizes = {**{n: p.shape for n, p in model.named_parameters()},
             **{n: b.shape for n, b in model.named_buffers()}}
    keep: dict[str, dict[int, torch.Tensor]] = {}
    for group, units in removed:
        for member in group.members:
            mask = keep.setdefault(member.name, {}).setdefault(
                member.dim, torch.ones(sizes[member.name][member.dim], dtype=torch.bool))
            mask[member.index[units].flatten()] = False
    return {name: {dim: torch.nonzero(mask).flatten().tolist() for dim, mask in dims.items()}
            for name, dims in keep.items()}


def head_attributes(model: nn.Module, groups: list[ChannelGroup], amount: float) -> dict[str, dict]:
    """{module name: {attribute: new value}} for the head spaces that lose ⌊amount·S⌋ of S units."""
    return _merged_patches(model, [(g, int(amount * g.size)) for g in groups
                                   if g.kind != "channels" and int(amount * g.size) > 0])


def _merged_patches(model: nn.Module, removed: list[tuple[ChannelGroup, int]]) -> dict[str, dict]:
    """`_patches` of every (group, units removed), merged per module."""
    patches: dict[str, dict] = {}
    for group, count in removed:
        for name, values in _patches(model, group, count).items():
            patches.setdefault(name, {}).update(values)
    return patches


def _patches(model: nn.Module, group: ChannelGroup, removed: int) -> dict[str, dict]:
    """The attributes of `HEAD_ATTRIBUTES` on the lowest module owning every member of `group`
    (and on its `config`) that count its S units, rescaled to S − removed."""
    owners = [m.name.rpartition(".")[0].split(".") for m in group.members]
    common = []
    for parts in zip(*owners):
        if len(set(parts)) > 1:
            break
        common.append(parts[0])
    name = ".".join(common)
    module, patch = model.get_submodule(name), {}
    for prefix, holder in (("", module), ("config.", getattr(module, "config", None))):
        for attr in HEAD_ATTRIBUTES:
            value = getattr(holder, attr, None) if holder is not None else None
            if isinstance(value, int) and not isinstance(value, bool) and value >= group.size \
                    and value % group.size == 0:
                patch[prefix + attr] = value // group.size * (group.size - removed)
    config = getattr(module, "config", None)
    if "config.num_attention_heads" in patch and getattr(config, "head_dim", None) is None \
            and isinstance(getattr(config, "hidden_size", None), int):
        # Hugging Face derives head_dim = hidden_size // num_attention_heads where the config has none:
        # a model rebuilt from the patched config needs the per-head size written down
        patch["config.head_dim"] = config.hidden_size // config.num_attention_heads
    return {name: patch} if patch else {}


def follows_removal(model: nn.Module, groups: list[ChannelGroup], inputs: tuple) -> bool:
    """Whether the model without the last unit of every group of `groups` (head counts patched)
    runs on `inputs` and computes what the model with those units' parameter slices zeroed
    computes."""
    plan = _plan(model, [(group, torch.tensor([group.size - 1])) for group in groups])
    shrunk = apply_plan(model, plan, _merged_patches(model, [(group, 1) for group in groups])).eval()
    expected = masked_outputs(model, plan, inputs)
    with torch.no_grad():
        try:
            got = list(output_tensors(shrunk(*inputs)))
        except Exception:  # any failure of the user's forward means: it does not follow
            return False
    return len(got) == len(expected) and all(map(outputs_match, got, expected))


def masked_outputs(model: nn.Module, plan: dict[str, dict[int, list[int]]], inputs: tuple) -> list[torch.Tensor]:
    """The output tensors on `inputs` of a copy of `model` (eval mode) whose planned parameters have
    every slice outside their kept indices zeroed: what the model cut to `plan` must compute."""
    masked = copy.deepcopy(model).eval()
    params = dict(masked.named_parameters())
    with torch.no_grad():
        for name, dims in plan.items():
            for dim, kept in dims.items():
                if name in params:
                    drop = torch.ones(params[name].shape[dim], dtype=torch.bool)
                    drop[kept] = False
                    params[name].index_fill_(dim, torch.nonzero(drop).flatten().to(params[name].device), 0)
        return list(output_tensors(masked(*inputs)))


def outputs_match(got: torch.Tensor, expected: torch.Tensor) -> bool:
    """Same shape and equal up to float rounding: |got − expected| ≤ 1e-4·(max|expected| + 1) + 1e-4·|expected|."""
    scale = float(expected.abs().max()) + 1.0 if expected.numel() else 1.0
    return got.shape == expected.shape and torch.allclose(got, expected, rtol=1e-4, atol=1e-4 * scale)


def apply_plan(model: nn.Module, plan: dict[str, dict[int, list[int]]],
               attributes: dict[str, dict] | None = None) -> nn.Module:
    """A copy of `model` with every planned tensor cut to its kept indices (module sizes updated)
    and the `attributes` patches of `head_attributes` set."""
    out = copy.deepcopy(model)
    for name, values in (attributes or {}).items():
        module = out.get_submodule(name)
        for attr, value in values.items():
            holder_name, _, leaf = attr.rpartition(".")
            setattr(getattr(module, holder_name) if holder_name else module, leaf, value)
    touched: dict[str, nn.Module] = {}
    for name, dims in plan.items():
        owner_name, _, leaf = name.rpartition(".")
        owner = out.get_submodule(owner_name)
        old = getattr(owner, leaf)
        with torch.no_grad():
            new = old.detach()
            for dim, kept in sorted(dims.items(), key=lambda item: int(item[0])):
                new = new.index_select(int(dim), torch.tensor(kept, dtype=torch.long, device=new.device))
            new = new.clone()
        if isinstance(old, nn.Parameter):
            setattr(owner, leaf, nn.Parameter(new, requires_grad=old.requires_grad))
        else:
            owner._buffers[leaf] = new
        touched[owner_name] = owner
    for owner in touched.values():
        for kind, fix in FIXERS:
            if isinstance(owner, kind):
                fix(owner)
                break
    return out


def _fix_conv1d(module: nn.Module) -> None:
    """Hugging Face's Conv1D (weight (nx, nf), forward reads `nf`)."""
    weight = getattr(module, "weight", None)
    if isinstance(getattr(module, "nf", None), int) and isinstance(weight, torch.Tensor) and weight.dim() == 2:
        module.nf = weight.shape[1]
        if isinstance(getattr(module, "nx", None), int):
            module.nx = weight.shape[0]


def _fix_conv(conv: nn.modules.conv._ConvNd) -> None:
    w = conv.weight
    if conv.transposed:  # weight (in, out/groups, ...)
        conv.in_channels, conv.out_channels = w.shape[0], w.shape[1] * conv.groups
        return
    if conv.groups > 1:  # only a depthwise conv (groups = in_channels) shrinks: m filters per group
        conv.groups = w.shape[0] // (conv.out_channels // conv.groups)
    conv.in_channels, conv.out_channels = w.shape[1] * conv.groups, w.shape[0]


def _fix_attention(mha: nn.MultiheadAttention) -> None:
    """An nn.MultiheadAttention that lost heads (num_heads patched by `head_attributes`) is
    computed head by head; its fused fast paths (which assume H·d = embed_dim) are turned off."""
    if supports_heads(mha) and mha.num_heads * mha.head_dim != mha.embed_dim:
        mha.__class__ = HeadedMultiheadAttention
        mha._qkv_same_embed_dim = False


def _fix_linear(linear: nn.Linear) -> None:
    linear.out_features, linear.in_features = linear.weight.shape


def _fix_batchnorm(bn: nn.modules.batchnorm._NormBase) -> None:
    bn.num_features = (bn.weight if bn.weight is not None else bn.running_mean).shape[0]


def _fix_layernorm(ln: nn.LayerNorm) -> None:
    if ln.weight is not None:
        ln.normalized_shape = tuple(ln.weight.shape)


def _fix_groupnorm(gn: nn.GroupNorm) -> None:
    gn.num_channels = gn.weight.shape[0]


FIXERS = [(nn.modules.conv._ConvNd, _fix_conv), (nn.Linear, _fix_linear),
          (nn.modules.batchnorm._NormBase, _fix_batchnorm), (nn.LayerNorm, _fix_layernorm),
          (nn.GroupNorm, _fix_groupnorm), (nn.MultiheadAttention, _fix_attention),
          (nn.Module, _fix_conv1d)]     # last: any other owner (Hugging Face's Conv1D; a no-op elsewhere)
