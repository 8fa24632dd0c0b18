"""Experiment configuration: a typed schema, YAML loading, dotted overrides and full validation.

A config file is YAML with the sections below (every key optional, defaults shown by the dataclasses).
It may also hold `methods: {name: {section: {key: value}}}`: named variants, each deep-merged onto
the rest of the file, so one file can describe several training runs (e.g. SFW variants and SGD).
Command-line overrides `section.key=value` (value parsed as YAML) apply to every method; an override
`methods.NAME.section.key=value` to one method only.

Every problem raises ConfigError naming the key, before anything is written.
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
import re
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Optional, Union

import yaml

from ..assign import MODES, RADIUS_RULES, check_coupled_step, check_fixed_step, check_k, check_norm_radius, mode_k
from ..assign_linear import LINEAR_RULES
from ..assign_step import DIRECTIONS
from ..models import check_model_option, model_options
from ..optim.baselines import PENALTIES, PROX_OPERATORS
from ..optim.functional import RESCALES
from ..optim.sfw import check_momentum
from .schedules import SCHEDULES

SGD_PENALTIES = (*PENALTIES, *PROX_OPERATORS)     # penalties added to the loss, then proximal steps
COMPRESSION_KINDS = ("unstructured", "filters", "channels", "lowrank")   # SweepConfig has a list of levels per kind
SFW_RULE_KEYS = ("radius_rule", "linear", "direction")   # OptimizerConfig keys handed to constrain only when set


_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


class ConfigError(ValueError):
    """A configuration problem; the message names the key."""


def _rule(holds, words: str):
    """A check: ValueError "{words}, got {value!r}" unless holds(value)."""
    def check(v):
        if not holds(v):
            raise ValueError(f"{words}, got {v!r}")
    return check


def _choice(*options):
    return _rule(lambda v: v in options, f"must be one of {', '.join(map(repr, options))}")


_positive = _rule(lambda v: v > 0, "must be positive")
_non_negative = _rule(lambda v: v >= 0, "must be ≥ 0")
_subset = _rule(lambda v: len(v) == 2 and all(n >= 1 for n in v), "must be a pair [n_train, n_test] of positive ints")


def _levels(v):
    bad = [x for x in v if not 0 < x < 1]
    if bad:
        raise ValueError(f"levels are fractions removed, each in (0, 1), not {', '.join(map(repr, bad))}, got {v!r}")


def _latency_kinds(v):
    bad = [k for k in ([] if isinstance(v, bool) else v) if k not in COMPRESSION_KINDS]
    if bad:
        raise ValueError(f"kinds are {', '.join(map(repr, COMPRESSION_KINDS))}, not {', '.join(map(repr, bad))}")


def _opt(default, check=None, doc=""):
    """A field: its default, its value check (raises ValueError: the config's own rules above, or the
    validator of the layer that owns the value, e.g. assign.check_k) and what it means."""
    return field(default_factory=lambda: copy.deepcopy(default), metadata={"check": check, "doc": doc})


@dataclass
class DataConfig:
    name: str = _opt("mnist5k", doc="dataset name for sparsefw.data.get_datasets")
    data_dir: Optional[str] = _opt(None, doc="where torchvision datasets live (Fashion-MNIST's IDX files, the "
                                   "fortunes folder: their Debian folder by default)")
    subset: Optional[list[int]] = _opt(None, _subset, "[n_train, n_test]: a stratified subset of each split "
                                     "(fortunes: windows in a seeded random order)")
    augment: Optional[bool] = _opt(None, doc="random crop/flip (default: the dataset's usual choice)")
    batch_size: int = _opt(128, _positive)
    eval_batch_size: int = _opt(256, _positive)
    num_workers: int = _opt(0, _non_negative)


@dataclass
class ModelConfig:
    name: str = _opt("cnn", doc="model name for sparsefw.models.build_model")
    options: dict = _opt({}, doc="the model's own options, written beside name (model: {name: fcn, widths: [16, "
                         "32, 64]}), as sparsefw.models.model_options lists them; null keeps the model's default")


@dataclass
class OptimizerConfig:
    name: str = _opt("sfw", _choice("sfw", "sgd"))
    lr: float = _opt(0.1, _positive)
    momentum: float = _opt(0.9, check_momentum)
    # SFW
    mode: str = _opt("k_support", _choice(*MODES), "feasible-region assignment (sparsefw.constrain)")
    k: Optional[Union[int, float, str]] = _opt(None, check_k, "fraction (float) or count (int) for k-regions, "
                                               "a quoted 'N:M' pattern for mode nm_k_support (null: the mode's "
                                               "default, sparsefw.assign.DEFAULT_K)")
    width: float = _opt(10.0, _positive, "radius = width · expected initial norm (biases, BN γ/β: see norm_radius)")
    rescale: Optional[str] = _opt("gradient", _choice(*RESCALES))
    bias_and_norm: str = _opt("mode", _choice("mode", "l2"), "regions of biases and BN γ/β: the mode's or L2 balls")
    norm_radius: Optional[Union[float, str]] = _opt(None, check_norm_radius, "radius of the regions of biases and BN "
                                                    "γ/β: 'init' (width · expected initial norm), 'width' (the "
                                                    "paper's code), a number, or null (the mode's default rule, "
                                                    "sparsefw.assign.DEFAULT_NORM_RADIUS)")
    coupled_width: Optional[float] = _opt(None, _positive, "radius of the coupled regions = coupled_width · "
                                          "their members' joint expected initial norm (mode "
                                          "coupled_group_k_support; null: sparsefw.assign_coupled."
                                          "DEFAULT_COUPLED_WIDTH)")
    coupled_step: Optional[Union[float, str]] = _opt(None, check_coupled_step, "fixed Frank-Wolfe step of the coupled "
                                                     "regions, scheduled like lr ('optimizer': lr and rescale; "
                                                     "null: sparsefw.assign_coupled.DEFAULT_COUPLED_STEP)")
    fixed_step: Optional[Union[float, str]] = _opt(None, check_fixed_step, "fixed Frank-Wolfe step of the "
                                                   "parameters whose scale the model ignores, scheduled like lr "
                                                   "('optimizer': lr and rescale; null: "
                                                   "sparsefw.assign_step.DEFAULT_FIXED_STEP)")
    radius_rule: Optional[str] = _opt(None, _choice(*RADIUS_RULES), "where radii come from: 'init' (the expected "
                                      "initial norm), 'checkpoint' (width · the tensor's own gauge) or 'auto' "
                                      "(null: sparsefw.assign.DEFAULT_RADIUS_RULE)")
    linear: Optional[str] = _opt(None, _choice(*LINEAR_RULES), "regions of hidden Linear layers in the filter and "
                                 "low-rank modes: 'l2' or 'structured' (null: sparsefw.assign.DEFAULT_LINEAR)")
    direction: Optional[str] = _opt(None, _choice(*DIRECTIONS), "what every LMO is fed and the step length: "
                                    "'momentum', 'adam' (Adam's direction and step length) or 'auto' (null: adam in "
                                    "the spectral modes only; sparsefw.assign_step)")
    # SGD
    weight_decay: float = _opt(0.0, _non_negative)
    nesterov: bool = _opt(False)
    penalty: Optional[str] = _opt(None, _choice(None, *SGD_PENALTIES), "SGD penalty or proximal step")
    penalty_lambda: float = _opt(0.0, _non_negative)


@dataclass
class ScheduleConfig:
    name: str = _opt("linear", _choice(*SCHEDULES))
    warmup_epochs: float = _opt(0.0, _non_negative)
    step_size: float = _opt(30.0, _positive, "epochs between decays (step)")
    milestones: list[float] = _opt([], doc="epochs at which to decay (multistep)")
    gamma: float = _opt(0.1, _positive, "decay factor (step, multistep; per epoch for exponential)")


@dataclass
class TrainingConfig:
    epochs: int = _opt(5, _positive)
    seed: int = _opt(0, _non_negative)
    device: str = _opt("auto", doc="'auto', 'cpu', 'cuda', 'cuda:1', ...")
    amp: bool = _opt(True, doc="mixed precision (used only on CUDA)")
    progress: bool = _opt(True, doc="tqdm bars (shown only on a terminal)")
    check_rank_consistency: bool = _opt(False, doc="under DDP, compare a parameter digest across ranks at the end")
    fsdp: bool = _opt(False, doc="under torchrun, shard parameters, gradients and optimizer state with FSDP2 "
                      "instead of replicating them with DDP (`sparsefw train --fsdp`; docs/distributed.md)")
    fsdp_param_dtype: Optional[str] = _opt(None, _choice(None, "float32", "bfloat16", "float16"),
                                           "FSDP2 mixed precision: forward and backward in this dtype (null: none)")
    fsdp_reduce_dtype: Optional[str] = _opt(None, _choice(None, "float32", "bfloat16", "float16"),
                                            "FSDP2 mixed precision: dtype of the gradient reduction (null: the "
                                            "forward's)")


@dataclass
class SweepConfig:
    unstructured: list[float] = _opt([0.5, 0.7, 0.9, 0.95], _levels, "sparsity levels (global magnitude pruning)")
    filters: list[float] = _opt([0.1, 0.3, 0.5, 0.7], _levels, "fraction of filters removed per conv")
    channels: list[float] = _opt([], _levels, "fraction of channels removed from every coupled channel space, "
                                 "residual streams included (remove_filters(coupled=True)); none by default")
    lowrank: list[float] = _opt([0.25, 0.5, 0.75, 0.9], _levels, "fraction of rank removed per layer")
    scope: str = _opt("global", _choice("global", "layer"), "pruning scope")
    criterion: str = _opt("l1", _choice("l1", "l2"), "filter/channel-removal criterion: the norm of each "
                          "filter, or the joint norm of each coupled channel's slices")
    lowrank_layers: str = _opt("conv", _choice("all", "conv"), "layers factorized: conv only (what the low-rank mode trains low-rank), or conv and linear")
    bn_recalibration: int = _opt(0, _non_negative, "training batches to re-estimate BatchNorm statistics on after "
                                 "compression (0: none, the paper's protocol)")
    latency: Union[bool, list[str]] = _opt(False, _latency_kinds, "kinds whose rows (and the dense row) carry "
                                           "measured CPU latency (true: every kind; slow), see sweep.py")


@dataclass
class ExperimentConfig:
    name: str = _opt("experiment")
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    sweep: SweepConfig = field(default_factory=SweepConfig)


# --- validation -------------------------------------------------------------------------------
_TYPE_NAMES = {int: "an integer", float: "a number", bool: "true or false", str: "a string", dict: "a mapping"}


def _type_name(tp) -> str:
    args = typing.get_args(tp)
    if typing.get_origin(tp) is list:
        return f"a list of {_type_name(args[0]).removeprefix('a ').removeprefix('an ')}s"
    names = [_TYPE_NAMES[a] if a in _TYPE_NAMES else _type_name(a)                     # int | float: a number
             for a in args or (tp,) if a is not int or float not in args]
    return " or ".join(names)


def _coerce(value: Any, tp, key: str) -> Any:
    """`value` as the schema's type `tp` (Optional, list, a number, int | float, float | str, or a plain
    type), or ConfigError naming `key`; what the value may be is the field's check."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if type(None) in args:
        return None if value is None else _coerce(value, Union[tuple(a for a in args if a is not type(None))], key)
    bad = ConfigError(f"config key '{key}': expected {_type_name(tp)}, got {value!r}")
    if str in args and isinstance(value, str):          # float | str: a number or a name
        return float(value) if float in args and _NUMBER.match(value) else value   # 5e-1: YAML 1.1's string
    number = tp is float or float in args
    if number and isinstance(value, str):               # YAML 1.1 reads 5e-4 (no dot) as a string
        with contextlib.suppress(ValueError):
            value = float(value)
    if origin is list:
        if not isinstance(value, list):
            raise bad
        return [_coerce(v, args[0], f"{key}[{i}]") for i, v in enumerate(value)]
    if number:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise bad
        return float(value) if tp is float else value   # int | float keeps which (k: count vs fraction)
    if origin is Union:                                 # bool | list: a switch or a list
        listed = next(a for a in args if typing.get_origin(a) is list)
        if isinstance(value, bool):
            return value
        if isinstance(value, list):
            return _coerce(value, listed, key)
        raise bad
    if tp is int and isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, bool) != (tp is bool) or not isinstance(value, tp):
        raise bad
    return value


def _build(cls, raw: Any, prefix: str):
    """`raw` as dataclass `cls`: every key known, of its type and passing its check, or ConfigError."""
    if not isinstance(raw, dict):
        raise ConfigError(f"config key '{prefix.rstrip('.') or '<root>'}': expected a mapping, got {raw!r}")
    if cls is ModelConfig:      # model: {name, **options}; the options are the model's (see _model_options)
        raw = {**({"name": raw["name"]} if "name" in raw else {}),
               "options": {k: v for k, v in raw.items() if k != "name" and v is not None}}
    fields, hints = {f.name: f for f in dataclasses.fields(cls)}, typing.get_type_hints(cls)
    for key in raw:
        if key not in fields:
            raise ConfigError(f"config key '{prefix}{key}': unknown key (known: {', '.join(sorted(fields))})")
    values = {}
    for name in [name for name in fields if name in raw]:
        key, tp, check = prefix + name, hints[name], fields[name].metadata.get("check")
        if dataclasses.is_dataclass(tp):
            values[name] = _build(tp, raw[name], key + ".")
            continue
        values[name] = value = _coerce(raw[name], tp, key)
        if check and value is not None:
            try:
                check(value)
            except ValueError as e:
                raise ConfigError(f"config key '{key}': {e}") from None
    return cls(**values)


def _model_options(model: ModelConfig) -> None:
    """The model's name and each option judged by sparsefw.models (its signature); tuple options kept as lists."""
    try:
        model_options(model.name)
    except ValueError as e:
        raise ConfigError(f"config key 'model.name': {e}") from None
    for key, value in model.options.items():
        try:
            value = check_model_option(model.name, key, value)
            model.options[key] = list(value) if isinstance(value, tuple) else value
        except ValueError as e:
            raise ConfigError(f"config key 'model.{key}': {e}") from None


def _cross_checks(cfg: ExperimentConfig) -> None:
    opt = cfg.optimizer
    if opt.name == "sfw":
        if opt.weight_decay:
            raise ConfigError("config key 'optimizer.weight_decay': SFW takes no weight decay (the constraint "
                              f"regularises), got {opt.weight_decay!r}")
        if opt.penalty is not None:
            raise ConfigError(f"config key 'optimizer.penalty': penalties apply to SGD only, got {opt.penalty!r}")
    elif opt.norm_radius is not None:
        raise ConfigError(f"config key 'optimizer.norm_radius': a radius of SFW's regions, not for {opt.name!r}")
    elif opt.fixed_step is not None:
        raise ConfigError(f"config key 'optimizer.fixed_step': a step of SFW's regions, not for {opt.name!r}")
    if opt.name == "sfw" and opt.k is not None:
        try:
            mode_k(opt.mode, opt.k)      # an 'N:M' pattern in mode nm_k_support only, N ≤ 4 as a count there
        except ValueError as e:
            raise ConfigError(f"config key 'optimizer.k': {e}") from None
    for key in SFW_RULE_KEYS:
        if getattr(opt, key) is not None and opt.name != "sfw":
            raise ConfigError(f"config key 'optimizer.{key}': a rule of SFW's regions, not for {opt.name!r}")
    for key in ("coupled_width", "coupled_step"):
        if getattr(opt, key) is not None and (opt.name != "sfw" or opt.mode != "coupled_group_k_support"):
            raise ConfigError(f"config key 'optimizer.{key}': applies to SFW with mode 'coupled_group_k_support' "
                              f"only, got {getattr(opt, key)!r} with {opt.name!r} mode {opt.mode!r}")
    if opt.penalty is not None and opt.penalty_lambda <= 0:
        raise ConfigError(f"config key 'optimizer.penalty_lambda': must be positive with penalty "
                          f"{opt.penalty!r}, got {opt.penalty_lambda!r}")
    if cfg.schedule.warmup_epochs >= cfg.training.epochs:
        raise ConfigError(f"config key 'schedule.warmup_epochs': must be shorter than training.epochs="
                          f"{cfg.training.epochs}, got {cfg.schedule.warmup_epochs!r}")
    if any(m <= 0 for m in cfg.schedule.milestones):
        raise ConfigError(f"config key 'schedule.milestones': must be positive, got {cfg.schedule.milestones!r}")


def validate(raw: dict) -> ExperimentConfig:
    """A plain dict (one method) → ExperimentConfig, or ConfigError naming the bad key."""
    cfg = _build(ExperimentConfig, raw, "")
    _model_options(cfg.model)
    _cross_checks(cfg)
    return cfg


def to_dict(cfg: ExperimentConfig) -> dict:
    """The plain dict `validate` reads back: the model's options beside model.name."""
    out = dataclasses.asdict(cfg)
    out["model"] = {"name": cfg.model.name, **cfg.model.options}
    return out


def differing_keys(a: Any, b: Any, prefix: str = "") -> list[str]:
    """Dotted keys at which two config dicts differ: differing_keys(to_dict(c1), to_dict(c2))."""
    if isinstance(a, dict) and isinstance(b, dict):
        return [k for key in a.keys() | b.keys() for k in differing_keys(a.get(key), b.get(key), f"{prefix}{key}.")]
    return [] if a == b else [prefix.rstrip(".")]


# --- files, overrides, methods ----------------------------------------------------------------
def _configs_dir():
    return resources.files("sparsefw").joinpath("configs")


def packaged_configs() -> list[str]:
    """Names of the configs shipped in sparsefw/configs/."""
    return sorted(p.name.removesuffix(".yaml") for p in _configs_dir().iterdir()
                  if p.name.endswith(".yaml"))


def read_config_file(path: str | Path) -> dict:
    """YAML file → dict. A bare name (no such file) refers to a packaged config."""
    p = Path(path)
    if not p.exists() and p.suffix == "" and str(path) in packaged_configs():
        text = _configs_dir().joinpath(f"{path}.yaml").read_text()
    elif not p.is_file():
        raise ConfigError(f"config file '{path}' not found (packaged configs: {', '.join(packaged_configs())})")
    else:
        text = p.read_text()
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"config file '{path}': invalid YAML: {e}") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"config file '{path}': expected a mapping at the top level, got {type(raw).__name__}")
    return raw


def parse_override(text: str) -> tuple[list[str], Any]:
    """'optimizer.lr=0.05' → (['optimizer', 'lr'], 0.05); the value is parsed as YAML."""
    key, sep, value = text.partition("=")
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {text!r}: expected KEY=VALUE with a dotted key, e.g. optimizer.lr=0.05")
    try:
        parsed = yaml.safe_load(value) if value.strip() else None
    except yaml.YAMLError:
        parsed = value
    return key.split("."), parsed


def _set(raw: dict, path: list[str], value: Any) -> None:
    node = raw
    for i, part in enumerate(path[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"config key '{'.'.join(path[:i + 1])}': expected a mapping, got {child!r}")
        node = child
    node[path[-1]] = value


def _merge(base: dict, update: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in update.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def resolve(raw: dict, overrides: list[str] = (), methods: list[str] | None = None) -> dict[str | None, ExperimentConfig]:
    """Apply overrides, expand `methods`, validate each. Returns {method name: config}; the single key
    None when the file lists no methods. `methods` selects a subset by name."""
    raw = copy.deepcopy(raw)
    parsed = [parse_override(o) for o in overrides]
    for path, value in parsed:
        _set(raw, path, value)
    variants = raw.pop("methods", None)
    if variants is None:
        if methods:
            raise ConfigError(f"--method {','.join(methods)}: the config lists no methods")
        return {None: validate(raw)}
    if not isinstance(variants, dict) or not variants:
        raise ConfigError(f"config key 'methods': expected a non-empty mapping of name → overrides, got {variants!r}")
    unknown = [m for m in methods or [] if m not in variants]
    if unknown:
        raise ConfigError(f"--method: unknown method(s) {unknown}; the config lists {list(variants)}")
    resolved = {}
    for name in methods or list(variants):
        if not isinstance(name, str) or not name.replace("_", "").replace("-", "").isalnum():
            raise ConfigError(f"config key 'methods.{name}': method names must be alphanumeric (with _ or -)")
        merged = _merge(raw, variants[name] if variants[name] is not None else {})
        for path, value in parsed:
            if path[0] != "methods":
                _set(merged, path, value)
        try:
            resolved[name] = validate(merged)
        except ConfigError as e:
            raise ConfigError(f"method '{name}': {e}") from None
    return resolved
