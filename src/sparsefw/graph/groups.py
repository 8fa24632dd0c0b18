"""Coupled channel groups: which channels of which tensors must leave together.

A *channel space* is a set of C channels that several parameters index: the layers that write it
(a conv's filters and bias, a Linear's rows), the norms applied to it (BatchNorm γ, β and running
statistics), channel-wise scales (layer scale) and the layers that read it (a conv's input columns,
a Linear's input columns, H·W of them per channel after a flatten). Channel c of a space is, in every
member, the slice `index[c]` along `dim`. Removing channel c means removing that slice from every
member; zeroing those slices ("masking channel c") gives the same function, because no kept channel
reads channel c any more.

Spaces are united where channels must be equal position by position: residual adds, channel-wise
muls (squeeze-and-excitation gates, layer scale), depthwise convs (output channel c·m + j reads input
channel c), the operands of a concat along another dim. A concat along the channel dim lays several
spaces side by side (offsets); a flatten makes a channel cover `inner` consecutive features.

A space is *fixed* (cannot shrink) where removing a channel would change what the model computes or
what it is: it reaches the model's input or output, an op not in the rule registry reads it, a
LayerNorm/GroupNorm normalizes over it (its statistics count every channel), a grouped conv reads or
writes it, or one of its parameters is used twice (tied weights count every name's uses).

Attention heads: a reshape that splits a channel dim of H·d into (H, d) coarsens its space to H
units of d channels; transpose/permute carry the H axis; q·kᵀ and attn·v (matmul or
scaled_dot_product_attention) unite the heads of q, k and v (grouped-query attention: a KV head
with its query group, the query space coarsened to match) and the merge back makes each head d
columns of the o-projection. Rotary embeddings act within a head (elementwise and rotate-half along
d), so whole heads stay units. A fused q/k/v projection split by the forward is split into spaces.
Such spaces (kind "heads" or "split") can only shrink if the forward reads its head counts and
split sizes from attributes (`surgery.HEAD_ATTRIBUTES`, patched on removal): that is tried on the
example inputs, one unit removed, and a space whose removal the forward does not follow is fixed.

The analysis runs on a `torch.export` graph of the model on example inputs (`capture`); the per-op
rules live in `group_rules`. `channel_groups` is the one source of truth for coupled removal
(`remove_filters(..., coupled=True)`) and for regions built over the same groups.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import fx, nn

from .arguments import as_input_tuple, check_module
from .capture import ExportedGraph, export_graph


@dataclass(frozen=True, eq=False)
class ChannelSlice:
    """Member of a channel space: channel c is `tensor.index_select(dim, index[c])`.

    name: qualified name of a parameter or buffer of the model; index: long tensor (C, k), k ≥ 1
    entries of `dim` per channel (k = H·W for a Linear reading a flattened map); parameter: False
    for buffers (BatchNorm running statistics); role: "out" (writes the channel: filters, biases),
    "norm" (γ/β, running statistics), "scale" (a channel-wise factor) or "in" (reads it).
    """

    name: str
    dim: int
    index: torch.Tensor
    parameter: bool
    role: str


@dataclass(frozen=True, eq=False)
class ChannelGroup:
    """One coupled channel space: `size` channels, the slices that index them, and `fixed`, the
    reason why it cannot shrink (None where it can). `kind` is "heads" for a space of attention
    heads (unit h = the head_dim rows of q/k/v head h — with grouped-query attention a KV head and
    its query group — and the o-projection's columns reading them), "split" for a part of a space
    the forward splits along its channels (a fused q/k/v projection), else "channels"; for the
    first two the forward's own sizes (num_heads, split_size) must follow a removal. Compared by
    identity (members hold tensors)."""

    size: int
    members: tuple[ChannelSlice, ...]
    fixed: str | None
    kind: str = "channels"

    def joint_norms(self, model: nn.Module, criterion: str = "l2") -> torch.Tensor:
        """Per channel c: ‖concat of all member parameter slices at c‖ (l1: Σ|w|, l2: √Σw²)."""
        state = dict(model.named_parameters())
        total = None
        for member in self.members:
            if not member.parameter:
                continue
            values = state[member.name].detach()
            picked = values.index_select(member.dim, member.index.flatten().to(values.device))
            picked = picked.movedim(member.dim, 0).reshape(self.size, -1)
            part = picked.abs().sum(1) if criterion == "l1" else picked.pow(2).sum(1)
            total = part if total is None else total + part.to(total.dtype)
        if total is None:
            return torch.zeros(self.size)
        return total if criterion == "l1" else total.sqrt()


@dataclass(frozen=True)
class Segment:
    """`size` channels of space `space`, channel c covering positions [c·inner, (c+1)·inner)."""

    space: int
    size: int
    inner: int = 1


@dataclass(frozen=True)
class Tracked:
    """The channel spaces laid out along dimension `dim` of a tensor, in order."""

    dim: int
    segments: tuple[Segment, ...]

    def with_inner(self, factor: int, dim: int | None = None) -> Tracked:
        return Tracked(self.dim if dim is None else dim,
                       tuple(Segment(s.space, s.size, s.inner * factor) for s in self.segments))

    def structure(self) -> tuple:
        return tuple((s.size, s.inner) for s in self.segments)


class DependencyAnalysis:
    """Walk the exported graph once, applying the rule of every op (`group_rules.rule_of`)."""

    def __init__(self, captured: ExportedGraph):
        from .group_rules import rule_of  # the rules import this module's types
        self.captured = captured
        self.parent: list[int] = []
        self.sizes: list[int] = []
        self.reasons: dict[int, str] = {}
        self.members: list[tuple[int, ChannelSlice]] = []
        self.tracked: dict[fx.Node, object] = {}
        self.replaced: dict[int, tuple] = {}  # root → ("coarsen", new, g) | ("split", [(new, size)])
        self.views: dict[fx.Node, tuple[str, int, int]] = {}  # state[start:…] along dim: (name, dim, start)
        self.heads: set[int] = set()   # spaces of attention heads
        self.cut: set[int] = set()     # parts of a space split along its channels
        for node in captured.graph.nodes:
            if node.op == "call_function":
                self.tracked[node] = rule_of(node.target)(self, node)
            elif node.op == "output":
                for tracked in self.tracked_args(node.args):
                    self.fix_tracked(tracked, "reaches the model output")
        uses = {name: self.uses(node) for node, name in captured.state_names.items()}
        for space, member in self.members:
            aliases = captured.aliases.get(member.name, ())
            count = sum(uses.get(name, 0) for name in (member.name, *aliases))
            if count > 1:
                tied = f" (tied to {', '.join(aliases)})" if aliases else ""
                self.fix(space, f"its parameter {member.name!r} is used {count} times{tied}")

    def uses(self, node: fx.Node) -> int:
        """How many computations read the entries of state tensor `node`: disjoint slices along one
        dim (q, k, v rows of one fused weight) are one use each of their own entries."""
        views = [u for u in node.users if u in self.views]
        ranges = sorted((self.views[u][1], self.views[u][2], self.views[u][2] + u.meta["val"].shape[self.views[u][1]])
                        for u in views)
        disjoint = len({d for d, _, _ in ranges}) <= 1 and all(
            a[2] <= b[1] for a, b in zip(ranges, ranges[1:]))
        through_views = (max((len(u.users) for u in views), default=0) if disjoint
                         else sum(len(u.users) for u in views))
        return len(node.users) - len(views) + through_views

    # ---- union-find over spaces -----------------------------------------------------------------
    def new_space(self, size: int) -> int:
        self.parent.append(len(self.parent))
        self.sizes.append(size)
        return self.parent[-1]

    def find(self, space: int) -> int:
        while self.parent[space] != space:
            self.parent[space] = self.parent[self.parent[space]]
            space = self.parent[space]
        return space

    def union(self, a: int, b: int) -> None:
        a, b = self.find(a), self.find(b)
        if a != b:
            a, b = min(a, b), max(a, b)
            self.parent[b] = a
            if b in self.reasons:
                self.reasons.setdefault(a, self.reasons.pop(b))

    def fix(self, space: int, reason: str) -> None:
        for segment in self.resolve(Segment(space, self.sizes[self.find(space)])):
            self.reasons.setdefault(self.find(segment.space), reason)

    # ---- coarser and split spaces (attention heads, fused q/k/v) ----------------------------------
    def resolve(self, segment: Segment) -> list[Segment]:
        """`segment` in today's spaces: a space since coarsened (units of g channels) or split into
        consecutive parts is replaced by what it became."""
        root = self.find(segment.space)
        change = self.replaced.get(root)
        if change is None:
            return [Segment(root, segment.size, segment.inner)]
        if change[0] == "coarsen":
            _, new, g = change
            return self.resolve(Segment(new, segment.size // g, segment.inner * g))
        return [s for new, size in change[1] for s in self.resolve(Segment(new, size, segment.inner))]

    def _rewrite(self, root: int, change: tuple, parts: list[tuple[int, int, int]]) -> None:
        """Move the members of `root` to `parts` [(new space, first channel, channels per unit)]."""
        members = []
        for space, member in self.members:
            if self.find(space) != root:
                members.append((space, member))
                continue
            for new, first, g in parts:
                rows = member.index[first:first + self.sizes[new] * g].reshape(self.sizes[new], -1)
                members.append((new, ChannelSlice(member.name, member.dim, rows, member.parameter,
                                                  member.role)))
        self.members = members
        self.replaced[root] = change
        for new, _, _ in parts:
            if root in self.reasons:
                self.reasons.setdefault(new, self.reasons[root])
            for marked in (self.heads, self.cut):
                if root in marked:
                    marked.add(new)

    def coarsen(self, space: int, g: int) -> int:
        """Make units of g consecutive channels of `space` (exact: only coarser choices); the new space."""
        root = self.find(space)
        if g == 1:
            return root
        new = self.new_space(self.sizes[root] // g)
        self._rewrite(root, ("coarsen", new, g), [(new, 0, g)])
        return new

    def split_space(self, space: int, sizes: list[int]) -> list[int]:
        """Split `space` into consecutive parts of `sizes` channels (fused q/k/v projections)."""
        root = self.find(space)
        news = [self.new_space(size) for size in sizes]
        firsts = [sum(sizes[:i]) for i in range(len(sizes))]
        self._rewrite(root, ("split", list(zip(news, sizes))), [(n, f, 1) for n, f in zip(news, firsts)])
        self.cut.update(news)
        return news

    def fix_tracked(self, tracked: Tracked | None, reason: str) -> None:
        if tracked is not None:
            for segment in tracked.segments:
                self.fix(segment.space, reason)

    def unify(self, a: Tracked, b: Tracked, where: str) -> Tracked | None:
        """Channels of `a` and `b` equal position by position: unite their spaces (a finer space
        is first coarsened to the other's units: a KV head and its group of query heads)."""
        if a.structure() != b.structure() and len(a.segments) == len(b.segments):
            for sa, sb in zip(a.segments, b.segments):
                fine, coarse = (sa, sb) if sa.inner < sb.inner else (sb, sa)
                if (sa.size * sa.inner == sb.size * sb.inner and coarse.inner % fine.inner == 0
                        and self.sizes[self.find(fine.space)] == fine.size):
                    self.coarsen(fine.space, coarse.inner // fine.inner)
            a, b = self.refresh(a), self.refresh(b)
        if a.structure() != b.structure():
            self.fix_tracked(a, f"channel layouts differ at {where}")
            self.fix_tracked(b, f"channel layouts differ at {where}")
            return None
        for sa, sb in zip(a.segments, b.segments):
            self.union(sa.space, sb.space)
        return a

    # ---- graph access ---------------------------------------------------------------------------
    def get(self, arg) -> Tracked | None:
        tracked = self.tracked.get(arg) if isinstance(arg, fx.Node) else None
        return self.refresh(tracked) if isinstance(tracked, Tracked) else None

    def refresh(self, tracked: Tracked) -> Tracked:
        return Tracked(tracked.dim, tuple(r for s in tracked.segments for r in self.resolve(s)))

    def tracked_args(self, args) -> list[Tracked]:
        found: list[fx.Node] = []
        fx.node.map_arg(args, found.append)
        return [t for t in (self.get(n) for n in found) if t is not None]

    def state_name(self, arg) -> str | None:
        """The model tensor `arg` is, or a slice along one dim of (nn.MultiheadAttention's q, k and v
        rows of in_proj_weight)."""
        if not isinstance(arg, fx.Node):
            return None
        return self.views[arg][0] if arg in self.views else self.captured.state_names.get(arg)

    def add_member(self, tracked: Tracked, arg, dim: int, role: str, offset: int = 0) -> bool:
        """Register state tensor `arg` (a parameter/buffer placeholder) as a member of every space
        of `tracked`, along `dim`, from index `offset` on. False (nothing registered) if `arg` is
        not model state."""
        name = self.state_name(arg)
        if name is None:
            return False
        if arg in self.views:
            _, view_dim, start = self.views[arg]
            if view_dim != dim:  # would take the slice's dim out of the other rows too
                return False
            offset += start
        for segment in self.refresh(tracked).segments:
            index = (offset + torch.arange(segment.size)[:, None] * segment.inner
                     + torch.arange(segment.inner)[None, :])
            self.members.append((segment.space, ChannelSlice(
                name, dim, index, name in self.captured.parameters, role)))
            offset += segment.size * segment.inner
        return True

    # ---- result ---------------------------------------------------------------------------------
    def groups(self) -> list[ChannelGroup]:
        by_root: dict[int, list[ChannelSlice]] = {}
        for space in range(len(self.parent)):
            if self.find(space) not in self.replaced:
                by_root.setdefault(self.find(space), [])
        for space, member in self.members:
            by_root[self.find(space)].append(member)
        out = []
        marked = {"heads": {self.find(s) for s in self.heads}, "split": {self.find(s) for s in self.cut}}
        for root, members in by_root.items():
            reason = self.reasons.get(root)
            if reason is None and not any(m.role == "out" for m in members):
                reason = "no layer writes it"
            kind = next((k for k, roots in marked.items() if root in roots), "channels")
            out.append(ChannelGroup(self.sizes[root], tuple(members), reason, kind))
        return out


def channel_groups(model: nn.Module, example_inputs, include_fixed: bool = False) -> list[ChannelGroup]:
    """The coupled channel spaces of `model`, from a `torch.export` capture on `example_inputs`.

    Returns the spaces that can shrink (with `include_fixed`, also the fixed ones, each with its
    reason), in graph order. Each has its size C and its member slices: (parameter or buffer name,
    dim, index (C, k) mapping channel c to that tensor's indices along dim, role). Removing channel
    c from every member is exactly the model with those slices zeroed.
    """
    check_module(model)
    inputs = as_input_tuple(example_inputs, "example_inputs")
    groups = _tried(model, DependencyAnalysis(export_graph(model, inputs)).groups(), inputs)
    return [g for g in groups if include_fixed or g.fixed is None]


def _tried(model: nn.Module, groups: list[ChannelGroup], inputs: tuple) -> list[ChannelGroup]:
    """`groups`, with every space of heads or split parts whose removal the forward does not follow
    (it computes head counts or split sizes from its input, not from the attributes `surgery`
    patches) fixed. Tried by removing one unit of every such space at once (a config shared by
    the layers is patched once), then, if that fails, of each alone (`surgery.follows_removal`)."""
    from .surgery import follows_removal  # surgery imports this module's types
    tried = [g for g in groups if g.fixed is None and g.kind != "channels" and g.size >= 2]
    if not tried or follows_removal(model, tried, inputs):
        return groups
    failing = {id(g) for g in tried if not follows_removal(model, [g], inputs)}
    reason = "the forward does not follow a smaller head count or split size (it computes them from its input)"
    return [ChannelGroup(g.size, g.members, reason, g.kind) if id(g) in failing else g for g in groups]
