"""Optimizers: Stochastic Frank-Wolfe (`SFW`, a torch.optim shell) and its functional kernel `sfw`."""
from .functional import sfw
from .sfw import SFW

__all__ = ["SFW", "sfw"]
