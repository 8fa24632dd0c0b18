"""Re-estimate BatchNorm statistics after compression (no weight changes, no labels).

Compression changes what every layer sees, but BatchNorm still normalises with the running mean
and variance of the dense model. Recalibration forgets them and re-estimates them from a few
batches of inputs: with momentum None torch keeps the cumulative average, so after B batches

    running_mean = (1/B) Σ_b mean_b(x),    running_var = (1/B) Σ_b var_b(x)  (unbiased per batch)

The paper's protocol does not recalibrate; it is the cheapest repair there is (forward passes only).
"""
from __future__ import annotations

import copy
from collections.abc import Iterable

import torch
from torch import nn

from ..graph.arguments import check_module


def recalibrate_batchnorm(model: nn.Module, batches: Iterable, max_batches: int | None = None) -> nn.Module:
    """A copy of `model` whose BatchNorm running statistics are re-estimated on `batches`.

    batches: an iterable of input tensors or of (inputs, ...) tuples (a DataLoader works), on any
    device (moved to the model's). max_batches: stop after this many. Every other module stays in
    eval mode (dropout off), the weights are not touched, and `model` is left as it is. A model
    without BatchNorm comes back as an unchanged copy.
    """
    check_module(model)
    if max_batches is not None and (isinstance(max_batches, bool) or not isinstance(max_batches, int)
                                    or max_batches < 1):
        raise ValueError(f"max_batches must be a positive integer or None, got {max_batches!r}")
    new = copy.deepcopy(model).eval()
    norms = [m for m in new.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return new
    untracked = [m for m in norms if not m.track_running_stats]
    if untracked:
        raise ValueError(f"{len(untracked)} BatchNorm layer(s) do not track running statistics; "
                         "there is nothing to recalibrate in them")
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None          # cumulative average over the batches seen
        m.train()
    device = next(new.parameters()).device
    seen = 0
    with torch.no_grad():
        for batch in batches:
            if max_batches is not None and seen >= max_batches:
                break
            inputs = batch[0] if isinstance(batch, (tuple, list)) else batch
            new(inputs.to(device))
            seen += 1
    if seen == 0:
        raise ValueError("batches is empty: no input to estimate BatchNorm statistics from")
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    return new.eval()
