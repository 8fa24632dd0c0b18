"""Channel dependency analysis of a model, pure torch: which channels of which tensors must leave
together.

capture        the model's graph from example inputs (`torch.export`, or torch.fx for the per-layer pass)
groups         union-find over coupled channel spaces → `channel_groups`, `ChannelGroup`, `ChannelSlice`
ops            the op registry: the category of every op known, as fx modules/functions/methods
               and as aten overloads (read by the analysis and by the per-layer pass)
group_rules    the per-op rules of the analysis (aten ops), by category
arguments      validation of the (model, example_inputs) arguments every capture takes

Lowest layer with `constraints`: imports torch and the standard library only, so that both
`constrain(..., "coupled_group_k_support")` (assign) and `remove_filters(coupled=True)` (compress)
build on the same analysis.
"""
from .groups import ChannelGroup, ChannelSlice, channel_groups

__all__ = ["ChannelGroup", "ChannelSlice", "channel_groups"]
