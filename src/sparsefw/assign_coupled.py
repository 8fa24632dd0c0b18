"""The regions of `constrain(model, "coupled_group_k_support", ...)`: one `CoupledGroupKSupportBall`
per coupled channel space that can shrink (`graph.channel_groups`, the analysis that
`remove_filters(coupled=True)` uses — one source of truth).

A space's region owns its *output side*: the parameter members of role "out" (the filters, rows and
biases that write the channel), "norm" (BatchNorm γ, β) and "scale" (channel-wise factors), each
sliced as the analysis says. Readers' input columns (role "in") are not in it: they are rows of the
reader's own output-space region, so every parameter lies in exactly one region and the feasible
set is a product. A vertex of the region is nonzero on k channels only, and a channel whose
output-side slices are all 0 outputs exactly 0 (its conv, bias and BN γ, β are 0), so removing it
changes nothing whatever its readers hold.

Radius: τ = coupled_width · √(Σ_m E‖θ_m^init‖₂²) over the members (`radii.expected_init_norms`,
1.0 for a zero-initialised β): the L2 norm of the concatenated members at init times a width of
its own, `DEFAULT_COUPLED_WIDTH` = 3 unless given, not the width 10 of the other regions.
Step: the region's param group carries `lr = coupled_step` and `rescale = None` (a fixed
Frank-Wolfe step η = coupled_step, `DEFAULT_COUPLED_STEP` = 0.02 unless given, following the
optimizer's schedule like any group lr) unless coupled_step="optimizer" (the optimizer's lr and
rescale). Both chosen by measurement
(BENCHMARKS.md "coupled_design" and "coupled_training"; docs/tuning.md): under the
gradient-rescaled step η = α‖m‖/‖θ − v‖ the regions of ResNet-20 did not concentrate in 3 epochs
(the weakest half of a space's channels still held 41–46 % of the squared joint norm) and
removal collapsed; a fixed η shrinks every channel no vertex selects by (1 − η) per step in every
space alike (share 0.00–0.05). At width 10 the region is slack (the k-support norm of the init
point is ≈ √(C/k)/width of τ) and nothing concentrates; width 5 lost dense accuracy, 2 and 3
behaved alike.

Member weights: 1 (the plain joint L2 norm of a channel's output-side slices), the norm
`ChannelGroup.joint_norms` ranks channels by in `remove_filters(coupled=True, criterion="l2")`
over all members. Weights 1/√(slice entries) did as well, not better; regions over BN γ, β alone
concentrated less and kept less at 50 % (same benchmark).

Attention heads are spaces like any other (`ChannelGroup.kind` "heads"): a head's unit is its
q/k/v rows; the parts of a fused q/k/v weight (GPT-2's c_attn, nn.MultiheadAttention's in_proj)
are joined into one member per tensor.

A parameter claimed by the output side of two spaces (never seen in the model zoo), and a member
whose channel slices do not cover its dim exactly once, are left out of every coupled region and
get the mode's fallback region (an L2 ball).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .constraints import CoupledGroupKSupportBall
from .graph import ChannelSlice, channel_groups

#: the roles of the members a space's region owns
OUTPUT_SIDE = ("out", "norm", "scale")
#: the radius of a coupled region is this multiple of its members' joint expected init norm
DEFAULT_COUPLED_WIDTH = 3.0
#: the fixed Frank-Wolfe step (param-group lr, rescale None) of every coupled region
DEFAULT_COUPLED_STEP = 0.02


def _capped(k: int | float, channels: int) -> int | float:
    return min(k, channels) if isinstance(k, int) else k


def _merged(members) -> list[ChannelSlice]:
    """One member per (tensor, dim, role): the slices of a fused q/k/v weight's parts (one per part
    in a space of heads) joined unit by unit."""
    joined: dict[tuple, list[ChannelSlice]] = {}
    for member in members:
        joined.setdefault((member.name, member.dim, member.role), []).append(member)
    return [parts[0] if len(parts) == 1 else ChannelSlice(
        parts[0].name, parts[0].dim, torch.cat([p.index for p in parts], 1), parts[0].parameter, parts[0].role)
        for parts in joined.values()]


def coupled_regions(model: nn.Module, example_inputs, k: int | float, width: float,
                    init_norms: dict[str, float]) -> list[tuple[list[str], CoupledGroupKSupportBall]]:
    """[(member parameter names in order, region)] for every shrinkable channel space of `model`."""
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    shapes = {name: p.shape for name, p in model.named_parameters()}
    spaces = []
    for group in channel_groups(model, example_inputs):
        members = []
        for member in _merged(group.members):
            if member.parameter and member.role in OUTPUT_SIDE and member.name in trainable:
                positions = sorted(member.index.flatten().tolist())
                if positions == list(range(shapes[member.name][member.dim])):
                    members.append(member)
        spaces.append((group.size, members))
    claims: dict[str, int] = {}
    for _, members in spaces:
        for member in members:
            claims[member.name] = claims.get(member.name, 0) + 1
    out = []
    for size, members in spaces:
        members = [m for m in members if claims[m.name] == 1]
        if not members:
            continue
        names = [m.name for m in members]
        radius = width * math.sqrt(sum(init_norms[n] ** 2 for n in names))
        region = CoupledGroupKSupportBall([shapes[n] for n in names], [m.dim for m in members],
                                          [m.index.tolist() for m in members], k=_capped(k, size),
                                          radius=radius)
        out.append((names, region))
    return out
