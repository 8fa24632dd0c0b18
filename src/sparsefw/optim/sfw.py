"""`SFW`: Stochastic Frank-Wolfe as a `torch.optim.Optimizer` (the shell around `functional.sfw`).

Choices (docs/method.md#the-sfw-step):

* Momentum m_t = ρ·m_{t−1} + (1−δ)·g_t with m_1 = g_1 (torch SGD's convention; it is the running
  sum started at m_0 = 0 for δ = 0 and the bias-free start of the average for δ = ρ). The default
  δ = 0 is the running-sum form of torch SGD and of the reference code: under rescale="gradient" a
  step moves θ by α·‖m_t‖₂, which in steady state is α‖g‖/(1−ρ), the length of an SGD-with-momentum
  step with the same α and ρ, so α is tuned like an SGD learning rate. The EMA form (δ = ρ) makes
  the steps 1/(1−ρ) times shorter (10× at ρ = 0.9): multiply α by 1/(1−ρ) to compare.
* Two step sizes, per param group: rescale="gradient" (the default) moves θ by the SGD length
  α‖m‖, so weight no vertex renews decays by (1 − η), η = α‖m‖/‖θ − v‖, which is tiny in a wide
  region; rescale=None with lr = η is the fixed Frank-Wolfe step, a (1 − η) decay per step at any
  radius. `sparsefw.constrain(model, mode, example_inputs=x)` gives the fixed step (its own "lr"
  and "rescale" keys, `sparsefw.assign_step`) to the parameters whose scale the model ignores and
  leaves the others to these defaults; a group's own keys override the optimizer's arguments.
* A param group with no "constraint" (or constraint=None) takes the unconstrained
  SGD-with-momentum step θ ← θ − α·m, whatever its rescale mode.
* A group with a constraint holds exactly one parameter of the constraint's shape, and that
  parameter must already lie in the region: the optimizer never moves weights except by its steps,
  so an infeasible start raises ValueError (use `sparsefw.constrain`, or `constraint.shift_inside`).
* The Frank-Wolfe gap of each constrained group is kept on the device after every step and read
  with `fw_gaps()` (which synchronises only then).
* A gradient holding nan or ±inf never reaches the weights: by default (nonfinite="skip") the whole
  step is skipped — every weight and momentum buffer stays as it is, as under GradScaler — and
  counted in `nonfinite_steps`; nonfinite="raise" raises FloatingPointError instead. On the CPU the
  check reads one flag; on other devices the step is masked on the device instead (nothing is read;
  a momentum buffer first created by a masked step is 0, which differs from "no buffer" only for
  dampening > 0). nonfinite="raise" always reads the flag.
* The last line of defence: a Frank-Wolfe vertex holding nan or ±inf (the LMOs return finite
  vertices for finite directions; `rules.finite_vertices`) is treated the same way — no
  constrained weight of its device and dtype (or of its joint group) moves, the step is counted in
  `nonfinite_steps` or raises FloatingPointError — except that the momentum buffers keep this step's
  (finite) gradient: they are updated before the oracle runs. Nothing is read on CUDA under "skip".
* AMP: `_step_supports_amp_scaling` — `torch.amp.GradScaler.step` hands the optimizer its
  `grad_scale` and `found_inf` (as to torch's fused SGD and Adam): the step unscales the gradients
  in place (by the scaler's float32 reciprocal, as `GradScaler.unscale_`) and is skipped where
  `found_inf` is set, so the scaler's one check serves; such skips are the scaler's business and
  are not counted in `nonfinite_steps`.
* `lr` may be a float or a 1-element tensor (as in torch.optim); a tensor lr is read on the device.
* The structure of a step (`plan.StepPlan`, run through `functional.sfw`) is built once and rebuilt only when the param
  groups change (regions, momentum, dampening, rescale, parameters, which parameters have
  gradients) or a state dict is loaded.
* `state_dict()` stores each region as `constraint.to_spec()` (plain data), so
  `torch.load(..., weights_only=True)` works; `load_state_dict` rebuilds the regions.
* FSDP2: a step over parameters that are DTensors sharded on dim 0 runs `sharded.ShardedPlan` — the
  same formulas on local shards, every scalar all-reduced, the LMO gathered or native per
  `distributed_lmo`, the momentum kept as Shard(0) DTensors — and its non-finite check is one
  all-reduce, so every rank skips alike (docs/distributed.md). Under GradScaler each rank unscales
  its shards and the scaler's `found_inf` is all-reduced the same way.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Iterable

import torch
from torch.optim import Optimizer

from ..constraints import Constraint, constraint_from_spec
from .functional import Gaps, sfw
from .plan import Entry, StepPlan
from .adam import DIRECTIONS
from .rules import RESCALES, finite_mask, is_multi_tensor, unscale_
from .sharded import STRATEGIES, ShardedPlan, full_value, is_sharded, local

NONFINITE = ("skip", "raise")


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _check_lr(lr: Any, where: str) -> None:
    """A finite number ≥ 0, or a 1-element floating-point tensor holding one (read once, here)."""
    if isinstance(lr, torch.Tensor):
        if lr.numel() != 1 or not lr.is_floating_point():
            raise ValueError(f"Invalid lr{where}: a tensor lr must be a 1-element floating-point tensor, got "
                             f"shape {tuple(lr.shape)} and dtype {lr.dtype}")
        value = float(lr)
    elif _is_number(lr):
        value = float(lr)
    else:
        raise ValueError(f"Invalid lr{where}: lr={lr!r}; expected a finite number ≥ 0 or a 1-element tensor")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"Invalid lr{where}: lr={lr!r}; expected a finite number ≥ 0")


def check_momentum(momentum: Any, where: str = "") -> None:
    """ValueError unless momentum is a number in [0, 1); `where` names the param group, if any."""
    if not _is_number(momentum) or not 0.0 <= momentum < 1.0:
        raise ValueError(f"Invalid momentum{where}: momentum={momentum!r}; expected a number in [0, 1)")


def _check_hyper_parameters(group: dict, where: str) -> None:
    dampening, rescale = group["dampening"], group["rescale"]
    _check_lr(group["lr"], where)
    check_momentum(group["momentum"], where)
    if not _is_number(dampening) or not 0.0 <= dampening <= 1.0:
        raise ValueError(f"Invalid dampening{where}: dampening={dampening!r}; expected a number in [0, 1]")
    if rescale not in RESCALES:
        raise ValueError(f"Invalid rescale{where}: rescale={rescale!r}; expected one of {RESCALES}")
    if group.get("direction", "momentum") not in DIRECTIONS:
        raise ValueError(f"Invalid direction{where}: direction={group['direction']!r}; expected one of {DIRECTIONS}")


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
    if is_multi_tensor(constraint):
        _check_multi_tensor(group, where)
        return
    if len(params) != 1:
        raise ValueError(f"Invalid params{where}: a group with a constraint holds exactly one parameter, "
                         f"got {len(params)}")
    p = params[0]
    if p.shape != constraint.shape:
        raise ValueError(f"Invalid constraint{where}: {constraint!r} does not fit a parameter of shape "
                         f"{tuple(p.shape)}")
    with torch.no_grad():
        norm = float(constraint.norm(full_value(p.detach())))
    if norm > constraint.radius * (1 + _feasibility_tolerance(p.dtype)):
        raise ValueError(f"Infeasible start{where}: the parameter has norm {norm:.6g} > radius {constraint.radius:.6g} "
                         f"of {constraint!r}; make it feasible first (sparsefw.constrain or constraint.shift_inside)")


def _check_multi_tensor(group: dict, where: str) -> None:
    """A region over several tensors: the group holds its members, in order, jointly feasible."""
    constraint, params = group["constraint"], group["params"]
    if [tuple(p.shape) for p in params] != [tuple(s) for s in constraint.shapes]:
        raise ValueError(f"Invalid params{where}: {constraint!r} needs parameters of shapes "
                         f"{[tuple(s) for s in constraint.shapes]} in order, got {[tuple(p.shape) for p in params]}")
    if len({p.dtype for p in params}) != 1 or len({p.device for p in params}) != 1:
        raise ValueError(f"Invalid params{where}: the members of {constraint!r} must share one dtype and device")
    with torch.no_grad():
        norm = float(constraint.norm(constraint.pack([full_value(p.detach()) for p in params])))
    if norm > constraint.radius * (1 + _feasibility_tolerance(params[0].dtype)):
        raise ValueError(f"Infeasible start{where}: the members have joint norm {norm:.6g} > radius "
                         f"{constraint.radius:.6g} of {constraint!r}; make them feasible first (sparsefw.constrain)")


class SFW(Optimizer):
    r"""Stochastic Frank-Wolfe with momentum and learning-rate rescaling.

    Args:
        params: parameters or param-group dicts; a group's "constraint" (a
            `sparsefw.constraints.Constraint`) restricts its single parameter to that region.
        lr: α ≥ 0, the learning rate, a float or a 1-element tensor (schedulers change
            ``group["lr"]`` as usual).
        momentum: ρ ∈ [0, 1).
        dampening: δ ∈ [0, 1]; 0 = running sum (SGD-like step lengths), ρ = exponential average.
        rescale: None, "diameter", "gradient" (default; step length α‖m‖₂) or "fast_gradient".
        nonfinite: what a step does when any gradient holds nan or ±inf. "skip" (default): nothing
            moves — no weight, no momentum buffer — and `nonfinite_steps` (saved in the state dict)
            grows by one, as GradScaler skips an overflowing step; "raise": FloatingPointError naming
            the first such parameter, with nothing moved. The check is one read-only pass over the
            gradients; on the CPU it reads one flag, on CUDA the step is masked on the device
            (no synchronisation; "raise" synchronises). Under GradScaler the scaler's check serves.
        spectral_refresh: None (default): every spectral-k-support / nuclear LMO is exact
            (Gram-eigh). An int R ≥ 1: warm-started — each step projects the direction on last
            step's basis and refines it by one subspace iteration (`best_rank_k_warm`, three matrix
            products), with an exact LMO every R-th step; the basis is kept in the optimizer state
            as a plain tensor ("spectral_basis"), so resuming and DDP stay bitwise reproducible.
        distributed_lmo: how the oracle of an FSDP2 parameter (a DTensor sharded on dim 0) sees the
            whole direction (`sharded`, docs/distributed.md): "gather" (all-gather it, the region's
            own LMO on every rank), "native" (per-region kernels that exchange only what the vertex
            needs: a norm, row norms, top-k histograms, a column Gram; others gathered) or "auto" (default:
            the fewer bytes, per tensor). Exact under each: the parameters one process computes.
        direction: "momentum" (default): the LMO (or, without a region, the SGD step) takes the
            momentum m; "adam": Adam's preconditioned m̂/(√û + ε) with β₁ = momentum (`optim.adam`;
            AdaSFW). `sparsefw.constrain` sets it per group where it chose it. Under FSDP2 the
            moments are sharded like the parameter (`sharded`).

    Every hyper-parameter except `nonfinite` can be overridden per param group.
    """

    #: GradScaler.step passes `grad_scale` and `found_inf` (see the module docstring)
    _step_supports_amp_scaling = True

    def __init__(self, params: Iterable, lr: float | torch.Tensor = 0.1, momentum: float = 0.9,
                 dampening: float = 0.0, rescale: str | None = "gradient", nonfinite: str = "skip",
                 spectral_refresh: int | None = None, distributed_lmo: str = "auto", direction: str = "momentum"):
        defaults = dict(lr=lr, momentum=momentum, dampening=dampening, rescale=rescale, constraint=None,
                        direction=direction)
        _check_hyper_parameters(defaults, "")
        if nonfinite not in NONFINITE:
            raise ValueError(f"Invalid nonfinite: nonfinite={nonfinite!r}; expected one of {NONFINITE}")
        if spectral_refresh is not None and (isinstance(spectral_refresh, bool) or not isinstance(spectral_refresh, int)
                                             or spectral_refresh < 1):
            raise ValueError(f"Invalid spectral_refresh: spectral_refresh={spectral_refresh!r}; expected None or an "
                             f"int ≥ 1")
        if distributed_lmo not in STRATEGIES:
            raise ValueError(f"Invalid distributed_lmo: distributed_lmo={distributed_lmo!r}; expected one of {STRATEGIES}")
        self.nonfinite = nonfinite
        self.distributed_lmo = distributed_lmo
        self.spectral_refresh = spectral_refresh
        self._reset_step_state(nonfinite_steps=0)
        super().__init__(params, defaults)

    def _reset_step_state(self, nonfinite_steps: int) -> None:
        """Forget the plan and the last gaps; `nonfinite_steps` counted on the host so far."""
        self._plans: dict[tuple, tuple[StepPlan, list, list, dict]] = {}
        self._plan_key: tuple | None = None
        self._joint_spans: list[tuple[int, int, int]] = []
        #: the last step's gaps (`functional.Gaps`, None: no step) and its entries' groups
        self._gaps: Gaps | None = None
        self._gap_groups: list[int] = []
        self._nonfinite_host = nonfinite_steps
        self._nonfinite_device: torch.Tensor | None = None
        #: mask non-finite steps on the device even on the CPU (tests of the CUDA path)
        self._mask_on_device = False

    @property
    def nonfinite_steps(self) -> int:
        """Steps skipped for a non-finite gradient or vertex (reading it synchronises once on CUDA)."""
        device = 0 if self._nonfinite_device is None else int(self._nonfinite_device)
        return self._nonfinite_host + device

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        self._reset_step_state(nonfinite_steps=state.get("_nonfinite_host", 0))

    def add_param_group(self, param_group: dict) -> None:
        super().add_param_group(param_group)
        where = f" in param group {len(self.param_groups) - 1}"
        try:
            _check_hyper_parameters(self.param_groups[-1], where)
            _check_constraint(self.param_groups[-1], where)
        except ValueError:
            self.param_groups.pop()
            raise
        if hasattr(self, "_plans"):
            self._plans, self._plan_key = {}, None

    # --- the step ------------------------------------------------------------------------
    def _plan(self) -> tuple[StepPlan, list, list[dict], dict, list[torch.Tensor]] | None:
        """(plan, its momentum-buffer list, its parameters' state dicts, its `sfw` lists, gradients)
        for the parameters that have a gradient now (every member of a multi-tensor region that has
        one: 0 for the others); the plan is rebuilt only when the groups' structure or the set of
        gradients changed."""
        groups = self.param_groups
        key = tuple((id(g["constraint"]), g["momentum"], g["dampening"], g["rescale"], g.get("direction"),
                     *map(id, g["params"]))
                    for g in groups)
        if key != self._plan_key:
            self._plans, self._plan_key = {}, key
            starts = [0]
            for g in groups:
                starts.append(starts[-1] + len(g["params"]))
            self._joint_spans = [(i, starts[i], starts[i + 1]) for i, g in enumerate(groups)
                                 if is_multi_tensor(g["constraint"])]
        grads = self._gradients()
        present = tuple(grad is not None for grad in grads)
        if present not in self._plans:
            entries = [Entry(p, g["constraint"], index, g["momentum"], g["dampening"], g["rescale"],
                             g.get("direction", "momentum"))
                       for index, g in enumerate(groups) for p in g["params"]]
            entries = [e for e, has in zip(entries, present) if has]
            if not entries:
                return None
            lists = dict(params=[e.param for e in entries], constraints=[e.constraint for e in entries],
                         momentums=[e.momentum for e in entries], dampenings=[e.dampening for e in entries],
                         rescales=[e.rescale for e in entries], groups=[e.group for e in entries])
            for e in sorted(entries, key=lambda e: is_multi_tensor(e.constraint)):
                self.state[e.param]          # created single-tensor entries first: state dicts keep their order
            self._plans[present] = (self._step_plan(entries),
                                    [self.state[e.param].get("momentum_buffer") for e in entries],
                                    [self.state[e.param] for e in entries], lists)
        plan, buffers, states, lists = self._plans[present]
        grads = [grad for grad in grads if grad is not None] if not all(present) else grads
        if any(grad.is_sparse for grad in grads):
            raise RuntimeError("SFW does not support sparse gradients")
        return plan, buffers, states, lists, grads

    def _step_plan(self, entries: list[Entry]) -> StepPlan | ShardedPlan:
        """A `plan.StepPlan`, or a `sharded.ShardedPlan` where some parameter is a DTensor."""
        if not any(is_sharded(e.param) for e in entries):
            return StepPlan(entries, self.spectral_refresh)
        names = [f"parameter {self.param_groups[e.group].get('name')!r} (param group {e.group})" for e in entries]
        return ShardedPlan(entries, self.spectral_refresh, getattr(self, "distributed_lmo", "auto"), names)

    def _gradients(self) -> list[torch.Tensor | None]:
        """Every parameter's gradient, group by group; a multi-tensor region with a gradient for
        some member has a zero one for the others (its step moves them all)."""
        grads = [p.grad for g in self.param_groups for p in g["params"]]
        for index, start, stop in self._joint_spans:
            members = grads[start:stop]
            if any(g is None for g in members) and any(g is not None for g in members):
                grads[start:stop] = [torch.zeros_like(p) if g is None else g
                                     for p, g in zip(self.param_groups[index]["params"], members)]
        return grads

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """One SFW step on every parameter that has a gradient; returns closure() if given."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        planned = self._plan()
        if planned is None:
            return loss
        plan, buffers, states, lists, grads = planned
        ok = self._finite_mask(grads, plan.device, plan)
        if ok is False:
            self._gaps = None
            return loss
        created = [b is None for b in buffers]
        lr = [g["lr"] for g in self.param_groups]
        flags: list[torch.Tensor] = []
        self._gaps = sfw(lists["params"], grads, buffers, lists["constraints"], lrs=[lr[i] for i in lists["groups"]],
                         momentums=lists["momentums"], dampenings=lists["dampenings"], rescales=lists["rescales"],
                         groups=lists["groups"], ok=ok, states=states, spectral_refresh=self.spectral_refresh,
                         vertex_flags=flags, plan=plan)
        self._gap_groups = lists["groups"]
        self._keep_new_buffers(plan, buffers, created)
        if flags:
            self._count_nonfinite_vertices(flags, ok, plan.device)
        return loss

    def _finite_mask(self, grads: list[torch.Tensor], device: torch.device,
                     plan: StepPlan | ShardedPlan | None = None) -> torch.Tensor | bool | None:
        """The non-finite policy: None (step), False (skip: counted, or raised, unless GradScaler's
        `found_inf` decided) or a 0-dim bool on `device` (mask the step there; nothing is read).
        Under GradScaler.step the gradients are first unscaled by its `grad_scale` (FSDP2: on
        the local shards; the skip decided by one all-reduce of the scaler's flag)."""
        found_inf = getattr(self, "found_inf", None)
        if found_inf is not None and getattr(self, "grad_scale", None) is not None:
            unscale_([local(g) for g in grads], self.grad_scale)      # sharded: each rank its shards
        on_device = device.type != "cpu" or self._mask_on_device
        read = not on_device or (found_inf is None and self.nonfinite == "raise")
        check = plan.finite_mask if isinstance(plan, ShardedPlan) else finite_mask   # sharded: over all ranks
        ok = check(grads, device, read=read, found_inf=found_inf)
        if ok is True:
            return None
        if found_inf is None and ok is False:
            if self.nonfinite == "raise":
                raise FloatingPointError(f"SFW.step: non-finite gradient (nan or inf) for "
                                         f"{self._describe(grads)}; no parameter was changed")
            self._nonfinite_host += 1
        elif found_inf is None:
            self._count_on_device(~ok)
        return ok

    def _count_on_device(self, bad: torch.Tensor) -> None:
        count = bad.long()
        self._nonfinite_device = count if self._nonfinite_device is None else self._nonfinite_device + count

    def _count_nonfinite_vertices(self, flags: list[torch.Tensor], ok: torch.Tensor | None,
                                  device: torch.device) -> None:
        """A step with a non-finite vertex (flags: False) counts in `nonfinite_steps` on the device
        (once, also where `ok` had masked it already), or raises under nonfinite="raise"."""
        bad = ~torch.stack([f.to(device, non_blocking=True) for f in flags]).all()
        if ok is not None:
            bad = bad & ok
        if self.nonfinite == "raise":
            if bool(bad):
                raise FloatingPointError("SFW.step: non-finite Frank-Wolfe vertex (nan or inf); no constrained "
                                         "weight of its device and dtype was changed (momentum buffers were)")
            return
        self._count_on_device(bad)

    def _keep_new_buffers(self, plan: StepPlan, buffers: list, created: list[bool]) -> None:
        if any(created):
            for e, buf, new in zip(plan.entries, buffers, created):
                if new and buf is not None:
                    self.state[e.param]["momentum_buffer"] = buf

    def _describe(self, grads: list[torch.Tensor]) -> str:
        """'parameter NAME (param group i)' for the first parameter whose gradient is not finite."""
        ids = {id(g) for g in grads if not bool(torch.isfinite(local(g)).all())}
        index = next((i for i, group in enumerate(self.param_groups)
                      if any(p.grad is not None and id(p.grad) in ids for p in group["params"])), None)
        if index is None:                # a sharded gradient whose non-finite entries are on another rank
            return "a parameter sharded onto another rank"
        name = self.param_groups[index].get("name")
        return f"parameter {name!r} (param group {index})" if name else f"a parameter of param group {index}"

    def fw_gaps(self) -> list[float]:
        """The Frank-Wolfe gap <m_t, θ_t − v_t> ≥ 0 of each param group at the last step (nan where
        the group has no constraint or took no step). Synchronises with the device once."""
        gaps = [math.nan] * len(self.param_groups)
        if self._gaps is not None and self._gaps.vectors:
            values = torch.cat([v.to("cpu", torch.float64) for v in self._gaps.vectors]).tolist()
            for entry, value in zip(self._gaps.entries, values):
                gaps[self._gap_groups[entry]] = value
        return gaps

    # --- state ---------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """torch's state dict with every region replaced by its plain-data spec; `nonfinite_steps`
        is stored beside "state" and "param_groups" and in every param group, where the
        `torch.distributed.checkpoint.state_dict` helpers (which keep only those two) carry it."""
        state = super().state_dict()
        state["nonfinite_steps"] = self.nonfinite_steps
        for group in state["param_groups"]:
            group["nonfinite_steps"] = state["nonfinite_steps"]
            if group.get("constraint") is not None:
                group["constraint"] = group["constraint"].to_spec()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Inverse of `state_dict`: rebuilds the regions from their specs and checks them."""
        groups, counts = [], [state_dict.get("nonfinite_steps", 0)]
        for group in state_dict["param_groups"]:
            spec = group.get("constraint")
            if isinstance(spec, dict):
                spec = constraint_from_spec(spec)
            counts.append(group.get("nonfinite_steps", 0))
            groups.append({**{k: v for k, v in group.items() if k != "nonfinite_steps"}, "constraint": spec})
        super().load_state_dict({**state_dict, "param_groups": groups})
        self._reset_step_state(nonfinite_steps=max(int(c) for c in counts))
        for index, group in enumerate(self.param_groups):
            where = f" in loaded param group {index}"
            _check_hyper_parameters(group, where)
            _check_constraint(group, where)
