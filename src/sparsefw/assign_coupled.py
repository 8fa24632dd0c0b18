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
Frank-Wolfe step η = coupled_step, following the optimizer's schedule like any group lr) unless
coupled_step is None (the optimizer's own lr and rescale). Both chosen by measurement
(BENCHMARKS.md, coupled_training): under the gradient-rescaled step η = α‖m‖/‖θ − v‖ the small
spaces (16 channels) concentrate onto k channels within 3 epochs while the 32- and 64-channel
spaces of ResNet-20 stay nearly uniform (the weakest half still holds 10-25 % of the squared joint
norm), and removal collapses; a fixed η shrinks every channel no vertex selects by (1 − η) per
step in every space alike. At width 10 the region is slack (the k-support norm of the init point
is ≈ √(C/k)/width of τ) and nothing concentrates.

Member weights: 1 (the plain joint L2 norm of a channel's output-side slices), the norm
`ChannelGroup.joint_norms` ranks channels by in `remove_filters(coupled=True, criterion="l2")`
over all members. A BN γ entry (init 1) and a conv row (init norm ≈ 1/√3 for torch's default
init) start on comparable scales. Ranking by the output side only or by γ, β only (the BN-aware
saliency) gave no better removal after coupled training (BENCHMARKS.md, coupled_training), and
a region over γ, β only (conv rows in L2 balls) kept less at 30 % on the small CNN.

A parameter claimed by the output side of two spaces (never seen in the model zoo), and a member
whose channel slices do not cover its dim exactly once, are left out of every coupled region and
get the mode's fallback region (an L2 ball).
"""
from __future__ import annotations

import math

from torch import nn

from .constraints import CoupledGroupKSupportBall
from .graph import channel_groups

#: the roles of the members a space's region owns
OUTPUT_SIDE = ("out", "norm", "scale")
#: the radius of a coupled region is this multiple of its members' joint expected init norm
DEFAULT_COUPLED_WIDTH = 3.0
#: the fixed Frank-Wolfe step (param-group lr, rescale None) of every coupled region
DEFAULT_COUPLED_STEP = 0.02


def _capped(k: int | float, channels: int) -> int | float:
    return min(k, channels) if isinstance(k, int) else k


def coupled_regions(model: nn.Module, example_inputs, k: int | float, width: float,
                    init_norms: dict[str, float]) -> list[tuple[list[str], CoupledGroupKSupportBall]]:
    """[(member parameter names in order, region)] for every shrinkable channel space of `model`."""
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    shapes = {name: p.shape for name, p in model.named_parameters()}
    spaces = []
    for group in channel_groups(model, example_inputs):
        members = []
        for member in group.members:
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
