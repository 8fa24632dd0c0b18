"""The paper's baselines as pieces that compose with torch.optim.SGD.

Conv weights W (c_out, c_in, kh, kw) are read as matrices W̃ = W.reshape(c_out, −1); filter f is row f.

- SGD with momentum and weight decay needs nothing new:
  ``torch.optim.SGD(model.parameters(), lr, momentum=0.9, weight_decay=5e-4)``.
- Penalties added to the loss (differentiable; autograd gives their (sub)gradients):
  group lasso   λ·Σ_conv Σ_f ‖W̃_f‖₂                     ``loss + group_lasso_penalty(model, lam)``
  coupled       λ·Σ_R Σ_c n_c (channel c's joint norm over every member of a coupled channel
  group lasso   region R)                ``loss + coupled_group_lasso_penalty(groups, lam)``
  nuclear norm  λ·Σ_conv ‖W̃‖_* = λ·Σ σ_i(W̃)              ``loss + nuclear_norm_penalty(model, lam)``
  (a full SVD of every conv matrix at every step: the cost SFW's top-k LMOs avoid).
- Proximal SGD: a gradient step on the loss alone, then θ ← prox_{lr·λ·R}(θ):
  nuclear      W̃ ← U·max(Σ − lr·λ, 0)·Vᵀ                 (singular-value soft-thresholding)
  group lasso  W̃_f ← max(1 − lr·λ/‖W̃_f‖₂, 0)·W̃_f          (block soft-thresholding)
  ``prox = ProxStep(opt, prox_nuclear_, lam)``; each iteration ``opt.step(); prox.step()``.

Matrices of equal shape are processed as one batch (one batched SVD per shape).
"""
from __future__ import annotations

import math
from collections import defaultdict
from typing import Callable, Iterable

import torch
from torch import nn

from ..constraints.topk_svd import tall

ParamSource = nn.Module | Iterable[torch.Tensor]


def _check_nonnegative(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {name}={value!r}")
    return float(value)


def conv_weights(source: ParamSource) -> list[torch.Tensor]:
    """The weights of every nn.Conv2d of a module, or the given tensors (each at least 2-D)."""
    if isinstance(source, nn.Module):
        return [m.weight for m in source.modules() if isinstance(m, nn.Conv2d)]
    if isinstance(source, torch.Tensor):
        raise ValueError("pass a module or an iterable of tensors, not a single tensor (wrap it in a list)")
    tensors = list(source)
    for i, t in enumerate(tensors):
        if not isinstance(t, torch.Tensor) or t.ndim < 2:
            raise ValueError(f"params[{i}] must be a tensor with at least 2 dims (c_out, ...), got "
                             f"{type(t).__name__}{tuple(t.shape) if isinstance(t, torch.Tensor) else ''}")
    return tensors


def _by_matrix_shape(tensors: list[torch.Tensor]) -> list[list[torch.Tensor]]:
    """Tensors grouped by (matrix shape, dtype, device) so each group can be stacked."""
    groups: dict[tuple, list[torch.Tensor]] = defaultdict(list)
    for t in tensors:
        groups[(t.shape[0], t[0].numel(), t.dtype, t.device)].append(t)
    return list(groups.values())


def group_lasso_penalty(source: ParamSource, lam: float) -> torch.Tensor:
    """λ·Σ_W Σ_f ‖W_f‖₂ over the output filters f of each conv weight W (0 if there is none)."""
    lam = _check_nonnegative("lam", lam)
    weights = conv_weights(source)
    if not weights:
        return torch.zeros(())
    return lam * sum(torch.linalg.vector_norm(w.flatten(1), dim=1).sum() for w in weights)


def coupled_group_lasso_penalty(groups: Iterable[dict], lam: float) -> torch.Tensor:
    """λ·Σ_R Σ_c n_c over the coupled channel regions R of `groups` (param-group dicts of
    `sparsefw.constrain(model, "coupled_group_k_support", ...)`): n_c the joint norm of channel c's
    slices in every member of R (`CoupledGroupKSupportBall.group_norms`), so the baseline penalises
    exactly the groups that coupled removal drops. Groups without such a region are skipped."""
    lam = _check_nonnegative("lam", lam)
    total = torch.zeros(())
    for group in groups:
        region = group.get("constraint") if isinstance(group, dict) else None
        if getattr(region, "multi_tensor", False):
            total = total + region.group_norms(region.pack(list(group["params"]))).sum()
    return lam * total


def nuclear_norm_penalty(source: ParamSource, lam: float) -> torch.Tensor:
    """λ·Σ_W ‖W.reshape(c_out, −1)‖_* (sum of all singular values: full SVDs) (0 if no conv)."""
    lam = _check_nonnegative("lam", lam)
    weights = conv_weights(source)
    if not weights:
        return torch.zeros(())
    total = sum(torch.linalg.svdvals(tall(torch.stack([w.flatten(1) for w in group]))).sum()
                for group in _by_matrix_shape(weights))
    return lam * total


@torch.no_grad()
def prox_nuclear_(params: ParamSource, lr: float, lam: float) -> None:
    """In place: W̃ ← argmin_X ½‖X − W̃‖_F² + lr·λ‖X‖_* = U·max(Σ − lr·λ, 0)·Vᵀ for each W."""
    t = _check_nonnegative("lr", lr) * _check_nonnegative("lam", lam)
    for group in _by_matrix_shape(conv_weights(params)):
        mats = torch.stack([w.flatten(1) for w in group])
        u, s, vh = torch.linalg.svd(tall(mats), full_matrices=False)
        shrunk = (u * (s - t).clamp_min(0).unsqueeze(-2)) @ vh
        if shrunk.shape != mats.shape:
            shrunk = shrunk.mT
        for w, m in zip(group, shrunk):
            w.copy_(m.view_as(w))


@torch.no_grad()
def prox_group_lasso_(params: ParamSource, lr: float, lam: float) -> None:
    """In place: each filter W_f ← argmin_X ½‖X − W_f‖² + lr·λ‖X‖₂ = max(1 − lr·λ/‖W_f‖₂, 0)·W_f."""
    t = _check_nonnegative("lr", lr) * _check_nonnegative("lam", lam)
    for w in conv_weights(params):
        norms = torch.linalg.vector_norm(w.flatten(1), dim=1)
        scale = torch.where(norms > t, 1 - t / norms, torch.zeros_like(norms))
        w.mul_(scale.view(-1, *([1] * (w.ndim - 1))))


class ProxStep:
    """The proximal half of proximal SGD: after `optimizer.step()`, `step()` applies
    prox(params, lr, lam) to the targeted parameters of each param group with that group's current
    lr (so learning-rate schedulers are followed). Targets default to the optimizer's 4-D
    parameters (conv weights); pass a module (its conv weights) or tensors to choose."""

    def __init__(self, optimizer: torch.optim.Optimizer, prox: Callable[..., None], lam: float,
                 params: ParamSource | None = None):
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise ValueError(f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}")
        if not callable(prox):
            raise ValueError(f"prox must be callable like prox_nuclear_(params, lr, lam), got prox={prox!r}")
        self.optimizer, self.prox, self.lam = optimizer, prox, _check_nonnegative("lam", lam)
        in_optimizer = {id(p) for g in optimizer.param_groups for p in g["params"]}
        targets = ([p for g in optimizer.param_groups for p in g["params"] if p.ndim == 4]
                   if params is None else conv_weights(params))
        missing = [tuple(p.shape) for p in targets if id(p) not in in_optimizer]
        if missing:
            raise ValueError(f"params must be parameters of the optimizer; tensors of shapes {missing} are not")
        self._targets = {id(p) for p in targets}

    def step(self) -> None:
        for group in self.optimizer.param_groups:
            chosen = [p for p in group["params"] if id(p) in self._targets]
            if chosen:
                self.prox(chosen, group["lr"], self.lam)


PENALTIES: dict[str, Callable[[ParamSource, float], torch.Tensor]] = {
    "group_lasso": group_lasso_penalty, "nuclear": nuclear_norm_penalty}
PROX_OPERATORS: dict[str, Callable[..., None]] = {"prox_group_lasso": prox_group_lasso_, "prox_svd": prox_nuclear_}
