"""The methods whose cost is compared, each bound to its own copy of a model (`Trainer`).

    SGD                          torch.optim.SGD(lr 0.1, momentum 0.9): the baseline
    SFW <region>                 sparsefw.SFW(constrain(model, mode, k, width 10), lr 0.1, momentum 0.9,
                                 rescale "gradient"); "warm": spectral_refresh=50 (warm-started LMO)
    SGD + nuclear penalty        loss + λ·Σ_conv ‖W̃‖_* (`nuclear_norm_penalty`: full SVDs, forward and
                                 backward, each SVD of the tall orientation), λ = 1e-4
    SGD + group-lasso penalty    loss + λ·Σ_conv Σ_f ‖W̃_f‖₂
    prox-SGD (SVT)               SGD step, then singular-value soft-thresholding of every conv matrix
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

import sparsefw
from sparsefw.optim.baselines import ProxStep, group_lasso_penalty, nuclear_norm_penalty, prox_nuclear_
from sparsefw.constraints.batched import lmos

LR, MOMENTUM, WIDTH, LAM = 0.1, 0.9, 10.0, 1e-4


@dataclass(frozen=True)
class Method:
    name: str
    kind: str                     # "sgd" | "sfw" | "penalty" | "prox"
    mode: str | None = None       # sparsefw.constrain mode (kind "sfw")
    k: float | None = None
    penalty: Callable[[nn.Module, float], torch.Tensor] | None = None
    spectral_refresh: int | None = None   # SFW: warm-started spectral LMO, exact every this many steps


METHODS: dict[str, Method] = {m.name: m for m in [
    Method("SGD", "sgd"),
    Method("SFW spectral k=10%", "sfw", "spectral_k_support", 0.1),
    Method("SFW spectral k=30%", "sfw", "spectral_k_support", 0.3),
    Method("SFW spectral k=30% warm", "sfw", "spectral_k_support", 0.3, spectral_refresh=50),
    Method("SFW nuclear ball", "sfw", "nuclear"),
    Method("SFW k-support k=10%", "sfw", "k_support", 0.1),
    Method("SFW group-k-support k=30%", "sfw", "group_k_support", 0.3),
    Method("SFW K-sparse k=10%", "sfw", "k_sparse", 0.1),
    Method("SFW L2 ball", "sfw", "l2"),
    Method("SGD + nuclear penalty", "penalty", penalty=nuclear_norm_penalty),
    Method("SGD + group-lasso penalty", "penalty", penalty=group_lasso_penalty),
    Method("prox-SGD (SVT)", "prox"),
]}

#: the methods of issue 9 (layer and model tables)
LAYER_METHODS = ["SGD", "SFW spectral k=10%", "SFW spectral k=30%", "SFW nuclear ball", "SFW k-support k=10%",
                 "SFW group-k-support k=30%", "SGD + nuclear penalty",
                 "prox-SGD (SVT)"]


class Trainer:
    """One method on its own deep copy of `model`."""

    def __init__(self, method: Method, model: nn.Module):
        self.method = method
        self.model = copy.deepcopy(model)
        if method.kind == "sfw":
            groups = sparsefw.constrain(self.model, method.mode, k=method.k, width=WIDTH)
            self.optimizer = sparsefw.SFW(groups, lr=LR, momentum=MOMENTUM, rescale="gradient",
                                          spectral_refresh=method.spectral_refresh)
        else:
            self.optimizer = torch.optim.SGD(self.model.parameters(), lr=LR, momentum=MOMENTUM)
        self.prox = ProxStep(self.optimizer, prox_nuclear_, LAM) if method.kind == "prox" else None

    def set_gradients(self, seed: int, scale: float) -> None:
        """p.grad ~ scale·N(0, 1), the same values for every Trainer given the same seed."""
        gen = torch.Generator().manual_seed(seed)
        for p in self.model.parameters():
            p.grad = (scale * torch.randn(p.shape, generator=gen)).to(p.device, p.dtype)

    def optimizer_step(self) -> None:
        """What the method adds after the loss's backward: penalty forward+backward, step, prox."""
        if self.method.penalty is not None:
            self.method.penalty(self.model, LAM).backward()
        self.optimizer.step()
        if self.prox is not None:
            self.prox.step()

    def own_work(self) -> Callable[[], None] | None:
        """The method's own work alone — its LMOs, its penalty's forward+backward, or its prox — as
        a callable (None for SGD). SFW's LMOs need the momentum buffers of a first step."""
        if self.method.kind == "sfw":
            groups = [g for g in self.optimizer.param_groups if g["constraint"] is not None]
            constraints = [g["constraint"] for g in groups]
            buffers = [self.optimizer.state[g["params"][0]]["momentum_buffer"] for g in groups]
            if self.method.spectral_refresh:   # the warm LMO on the bases of the last step
                return lambda: self._warm_lmos(groups, buffers)
            return lambda: lmos(constraints, buffers)
        if self.method.penalty is not None:
            return lambda: self.method.penalty(self.model, LAM).backward()
        if self.prox is not None:
            return self.prox.step
        return None

    def _warm_lmos(self, groups: list[dict], buffers: list[torch.Tensor]) -> None:
        for group, m in zip(groups, buffers):
            c, state = group["constraint"], self.optimizer.state[group["params"][0]]
            basis = state.get("spectral_basis")
            if basis is None:
                c.lmo(m)
            else:
                c.warm_lmo_rows(m.unsqueeze(0), torch.tensor([c.radius]), basis.unsqueeze(0))

    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """Forward, loss (+ penalty), backward, optimizer step (+ prox)."""
        self.optimizer.zero_grad()
        loss = F.cross_entropy(self.model(x), y)
        if self.method.penalty is not None:
            loss = loss + self.method.penalty(self.model, LAM)
        loss.backward()
        self.optimizer.step()
        if self.prox is not None:
            self.prox.step()
