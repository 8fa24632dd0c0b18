"""`SFW`: Stochastic Frank-Wolfe as a `torch.optim.Optimizer` (the shell around `functional.sfw`).

Choices (REFERENCE.md §1):

* Momentum m_t = ρ·m_{t−1} + (1−δ)·g_t with m_1 = g_1 (torch SGD's convention; it is the running
  sum started at m_0 = 0 for δ = 0 and the bias-free start of the average for δ = ρ). The default
  δ = 0 is the running-sum form of torch SGD and of the reference code: under rescale="gradient" a
  step moves θ by α·‖m_t‖₂, which in steady state is α‖g‖/(1−ρ), the length of an SGD-with-momentum
  step with the same α and ρ, so α is tuned like an SGD learning rate. The EMA form (δ = ρ) makes
  the steps 1/(1−ρ) times shorter (10× at ρ = 0.9): multiply α by 1/(1−ρ) to compare.
* A param group with no "constraint" (or constraint=None) takes the unconstrained
  SGD-with-momentum step θ ← θ − α·m, whatever its rescale mode.
* A group with a constraint holds exactly one parameter of the constraint's shape, and that
  parameter must already lie in the region: the optimizer never moves weights except by its steps,
  so an infeasible start raises ValueError (use `sparsefw.constrain`, or `constraint.shift_inside`).
* The Frank-Wolfe gap of each constrained group is kept on the device after every step and read
  with `fw_gaps()` (which synchronises only then).
* A gradient holding nan or ±inf never reaches the weights: by default (nonfinite="skip") the whole
  step is skipped — every weight and momentum buffer stays as it is, as under GradScaler — and
  counted in `nonfinite_steps`; nonfinite="raise" raises FloatingPointError instead.
* `state_dict()` stores each region as `constraint.to_spec()` (plain data), so
  `torch.load(..., weights_only=True)` works; `load_state_dict` rebuilds the regions.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Iterable

import torch
from torch.optim import Optimizer

from ..constraints import Constraint, constraint_from_spec
from .functional import RESCALES, all_finite, sfw

NONFINITE = ("skip", "raise")


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _check_hyper_parameters(group: dict, where: str) -> None:
    lr, momentum, dampening, rescale = group["lr"], group["momentum"], group["dampening"], group["rescale"]
    if not _is_number(lr) or not math.isfinite(lr) or lr < 0:
        raise ValueError(f"Invalid lr{where}: lr={lr!r}; expected a finite number ≥ 0")
    if not _is_number(momentum) or not 0.0 <= momentum < 1.0:
        raise ValueError(f"Invalid momentum{where}: momentum={momentum!r}; expected a number in [0, 1)")
    if not _is_number(dampening) or not 0.0 <= dampening <= 1.0:
        raise ValueError(f"Invalid dampening{where}: dampening={dampening!r}; expected a number in [0, 1]")
    if rescale not in RESCALES:
        raise ValueError(f"Invalid rescale{where}: rescale={rescale!r}; expected one of {RESCALES}")


def _feasibility_tolerance(dtype: torch.dtype) -> float:
    return max(1e-5, 16 * torch.finfo(dtype).eps)


def _check_constraint(group: dict, where: str) -> None:
    constraint = group["constraint"]
    if constraint is None:
        return
    if not isinstance(constraint, Constraint):
        raise ValueError(f"Invalid constraint{where}: expected a sparsefw.constraints.Constraint or None, "
                         f"got {type(constraint).__name__}")
    params = group["params"]
    if len(params) != 1:
        raise ValueError(f"Invalid params{where}: a group with a constraint holds exactly one parameter, "
                         f"got {len(params)}")
    p = params[0]
    if p.shape != constraint.shape:
        raise ValueError(f"Invalid constraint{where}: {constraint!r} does not fit a parameter of shape "
                         f"{tuple(p.shape)}")
    with torch.no_grad():
        norm = float(constraint.norm(p.detach()))
    if norm > constraint.radius * (1 + _feasibility_tolerance(p.dtype)):
        raise ValueError(f"Infeasible start{where}: the parameter has norm {norm:.6g} > radius {constraint.radius:.6g} "
                         f"of {constraint!r}; make it feasible first (sparsefw.constrain or constraint.shift_inside)")


class SFW(Optimizer):
    r"""Stochastic Frank-Wolfe with momentum and learning-rate rescaling.

    Args:
        params: parameters or param-group dicts; a group's "constraint" (a
            `sparsefw.constraints.Constraint`) restricts its single parameter to that region.
        lr: α ≥ 0, the learning rate (schedulers change ``group["lr"]`` as usual).
        momentum: ρ ∈ [0, 1).
        dampening: δ ∈ [0, 1]; 0 = running sum (SGD-like step lengths), ρ = exponential average.
        rescale: None, "diameter", "gradient" (default; step length α‖m‖₂) or "fast_gradient".
        nonfinite: what a step does when any gradient holds nan or ±inf. "skip" (default): nothing
            moves — no weight, no momentum buffer — and `nonfinite_steps` (saved in the state dict)
            grows by one, as GradScaler skips an overflowing step; "raise": FloatingPointError naming
            the first such parameter, with nothing moved. The check is one read-only pass over the
            gradients and, on CUDA, one host–device synchronisation per step (as GradScaler's step).

    Every hyper-parameter except `nonfinite` can be overridden per param group.
    """

    def __init__(self, params: Iterable, lr: float = 0.1, momentum: float = 0.9, dampening: float = 0.0,
                 rescale: str | None = "gradient", nonfinite: str = "skip"):
        defaults = dict(lr=lr, momentum=momentum, dampening=dampening, rescale=rescale, constraint=None)
        _check_hyper_parameters(defaults, "")
        if nonfinite not in NONFINITE:
            raise ValueError(f"Invalid nonfinite: nonfinite={nonfinite!r}; expected one of {NONFINITE}")
        self.nonfinite = nonfinite
        self.nonfinite_steps = 0
        self._fw_gaps: dict[int, torch.Tensor] = {}
        super().__init__(params, defaults)

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        self._fw_gaps = {}

    def add_param_group(self, param_group: dict) -> None:
        super().add_param_group(param_group)
        where = f" in param group {len(self.param_groups) - 1}"
        try:
            _check_hyper_parameters(self.param_groups[-1], where)
            _check_constraint(self.param_groups[-1], where)
        except ValueError:
            self.param_groups.pop()
            raise

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """One SFW step on every parameter that has a gradient; returns closure() if given."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        params, grads, buffers, constraints, lrs, momentums, dampenings, rescales, owners = ([] for _ in range(9))
        for index, group in enumerate(self.param_groups):
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("SFW does not support sparse gradients")
                params.append(p)
                grads.append(p.grad)
                buffers.append(self.state[p].get("momentum_buffer"))
                constraints.append(group["constraint"])
                lrs.append(float(group["lr"]))
                momentums.append(group["momentum"])
                dampenings.append(group["dampening"])
                rescales.append(group["rescale"])
                owners.append(index)
        if grads and not all_finite(grads):
            if self.nonfinite == "raise":
                raise FloatingPointError(f"SFW.step: non-finite gradient (nan or inf) for "
                                         f"{self._describe(params, grads)}; no parameter was changed")
            self.nonfinite_steps += 1
            self._fw_gaps = {}
            return loss
        gaps = sfw(params, grads, buffers, constraints, lrs=lrs, momentums=momentums, dampenings=dampenings,
                   rescales=rescales)
        for p, buf in zip(params, buffers):
            if buf is not None:
                self.state[p]["momentum_buffer"] = buf
        self._fw_gaps = {index: gap for index, gap in zip(owners, gaps) if gap is not None}
        return loss

    def _describe(self, params: list[torch.Tensor], grads: list[torch.Tensor]) -> str:
        """'parameter NAME (param group i)' for the first parameter whose gradient is not finite."""
        bad = next(p for p, g in zip(params, grads) if not bool(torch.isfinite(g).all()))
        index = next(i for i, group in enumerate(self.param_groups) if any(q is bad for q in group["params"]))
        name = self.param_groups[index].get("name")
        return f"parameter {name!r} (param group {index})" if name else f"a parameter of param group {index}"

    def fw_gaps(self) -> list[float]:
        """The Frank-Wolfe gap <m_t, θ_t − v_t> ≥ 0 of each param group at the last step (nan where
        the group has no constraint or took no step). Synchronises with the device once."""
        gaps = [math.nan] * len(self.param_groups)
        for index, gap in self._fw_gaps.items():
            gaps[index] = gap.item()
        return gaps

    def state_dict(self) -> dict[str, Any]:
        """torch's state dict with every region replaced by its plain-data spec."""
        state = super().state_dict()
        state["nonfinite_steps"] = self.nonfinite_steps
        for group in state["param_groups"]:
            if group.get("constraint") is not None:
                group["constraint"] = group["constraint"].to_spec()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Inverse of `state_dict`: rebuilds the regions from their specs and checks them."""
        groups = []
        for group in state_dict["param_groups"]:
            spec = group.get("constraint")
            if isinstance(spec, dict):
                spec = constraint_from_spec(spec)
            groups.append({**group, "constraint": spec})
        super().load_state_dict({**state_dict, "param_groups": groups})
        self._fw_gaps = {}
        self.nonfinite_steps = int(state_dict.get("nonfinite_steps", 0))
        for index, group in enumerate(self.param_groups):
            where = f" in loaded param group {index}"
            _check_hyper_parameters(group, where)
            _check_constraint(group, where)
