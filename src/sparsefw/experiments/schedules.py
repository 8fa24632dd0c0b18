"""Learning-rate schedules as per-iteration factors for torch.optim.lr_scheduler.LambdaLR.

With T iterations in all, W = warm-up iterations and t = i − W the iteration count after warm-up
(T' = T − W of them), the learning rate at iteration i (0-based, before its step) is lr·f(i):

    warm-up (i < W)   f = (i + 1) / W
    constant          f = 1
    step              f = γ^⌊t / s⌋                   s = step size in iterations
    multistep         f = γ^(number of milestones ≤ t)
    exponential       f = γ^(t / iterations_per_epoch)  γ per epoch, applied smoothly
    linear            f = 1 − t / T'                  0 at the end
    cosine            f = (1 + cos(π t / T')) / 2     ½ at the midpoint, 0 at the end

Step sizes, milestones and warm-up are given in epochs and converted to iterations. The factor
object holds plain data only, so LambdaLR's state_dict loads with torch.load(weights_only=True).
"""
from __future__ import annotations

import bisect
import math

SCHEDULES = ("constant", "step", "multistep", "linear", "cosine", "exponential")


class LRFactor:
    """Callable i ↦ f(i) for the schedule `name` over `total_iters` iterations."""

    def __init__(self, name: str, total_iters: int, iters_per_epoch: int, *, warmup_epochs: float = 0.0,
                 step_size: float = 30.0, milestones: list[float] | tuple[float, ...] = (), gamma: float = 0.1):
        if name not in SCHEDULES:
            raise ValueError(f"name must be one of {SCHEDULES}, got name={name!r}")
        if not isinstance(total_iters, int) or total_iters < 1:
            raise ValueError(f"total_iters must be a positive int, got total_iters={total_iters!r}")
        if not isinstance(iters_per_epoch, int) or iters_per_epoch < 1:
            raise ValueError(f"iters_per_epoch must be a positive int, got iters_per_epoch={iters_per_epoch!r}")
        if not 0 <= warmup_epochs or round(warmup_epochs * iters_per_epoch) >= total_iters:
            raise ValueError(f"warmup_epochs must be ≥ 0 and shorter than training, got warmup_epochs={warmup_epochs!r}")
        if step_size <= 0:
            raise ValueError(f"step_size must be positive, got step_size={step_size!r}")
        if not gamma > 0:
            raise ValueError(f"gamma must be positive, got gamma={gamma!r}")
        self.name = name
        self.total_iters = total_iters
        self.iters_per_epoch = iters_per_epoch
        self.warmup_iters = int(round(warmup_epochs * iters_per_epoch))
        self.step_iters = max(1, int(round(step_size * iters_per_epoch)))
        self.milestone_iters = sorted(int(round(m * iters_per_epoch)) for m in milestones)
        self.gamma = float(gamma)

    def __call__(self, i: int) -> float:
        if i < self.warmup_iters:
            return (i + 1) / self.warmup_iters
        t, span = i - self.warmup_iters, self.total_iters - self.warmup_iters
        if self.name == "constant":
            return 1.0
        if self.name == "step":
            return self.gamma ** (t // self.step_iters)
        if self.name == "multistep":
            return self.gamma ** bisect.bisect_right(self.milestone_iters, t)
        if self.name == "exponential":
            return self.gamma ** (t / self.iters_per_epoch)
        progress = min(t / span, 1.0)
        if self.name == "linear":
            return 1.0 - progress
        return 0.5 * (1.0 + math.cos(math.pi * progress))  # cosine
