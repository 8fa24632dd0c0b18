"""Optimizer from the config: SFW over the paper's regions, or SGD with an optional penalty or
proximal step (the paper's baselines)."""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from ..assign import constrain
from ..optim import SFW
from ..optim.baselines import PENALTIES, PROX_OPERATORS, ProxStep
from .config import SFW_RULE_KEYS, ConfigError, OptimizerConfig


def build_optimizer(cfg: OptimizerConfig, model: nn.Module, example_inputs=None) -> tuple[
        torch.optim.Optimizer, Callable[[nn.Module], torch.Tensor] | None, Callable[[], None] | None]:
    """(optimizer, penalty(model) added to the loss or None, proximal step run after each
    optimizer step or None). SFW makes the model's start feasible (scales weights outside their
    region onto it), as `sparsefw.constrain` does; `example_inputs` (one input batch) feeds the channel
    analysis of mode "coupled_group_k_support" and the step rule (`sparsefw.assign_step`)."""
    try:
        if cfg.name == "sfw":
            groups = constrain(model, cfg.mode, k=cfg.k, width=cfg.width, bias_and_norm=cfg.bias_and_norm,
                               norm_radius=cfg.norm_radius, example_inputs=example_inputs,
                               coupled_width=cfg.coupled_width, coupled_step=cfg.coupled_step,
                               fixed_step=cfg.fixed_step,
                               **{key: getattr(cfg, key) for key in SFW_RULE_KEYS if getattr(cfg, key)})
            return SFW(groups, lr=cfg.lr, momentum=cfg.momentum, rescale=cfg.rescale), None, None
        optimizer = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                                    weight_decay=cfg.weight_decay, nesterov=cfg.nesterov)
    except ValueError as e:
        raise ConfigError(f"config key 'optimizer': {e}") from None
    if cfg.penalty in PENALTIES:
        penalty, lam = PENALTIES[cfg.penalty], cfg.penalty_lambda
        return optimizer, lambda m: penalty(m, lam), None
    if cfg.penalty in PROX_OPERATORS:
        return optimizer, None, ProxStep(optimizer, PROX_OPERATORS[cfg.penalty], cfg.penalty_lambda).step
    return optimizer, None, None
