"""Optimizers: Stochastic Frank-Wolfe (`SFW`, a torch.optim shell) and its functional kernel `sfw`;
the paper's baselines (penalties and proximal steps to pair with torch.optim.SGD)."""
from .baselines import (PENALTIES, PROX_OPERATORS, ProxStep, conv_weights, coupled_group_lasso_penalty,
                        group_lasso_penalty, nuclear_norm_penalty, prox_group_lasso_, prox_nuclear_)
from .functional import sfw
from .sfw import SFW

__all__ = ["SFW", "sfw", "group_lasso_penalty", "coupled_group_lasso_penalty", "nuclear_norm_penalty",
           "prox_nuclear_", "prox_group_lasso_", "ProxStep", "conv_weights", "PENALTIES", "PROX_OPERATORS"]
