"""From a config file to run directories: one per method.

    plans = plan_runs("demo", overrides=["training.epochs=3"], out="runs/demo")
    for p in plans: train(p.config, p.out_dir, resume=p.resume)

A config without `methods` is one run in `out` (default runs/<name>); with methods, method m runs in
`out/m`. Everything is validated before any directory is created.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from .checkpoint import checkpoint_path
from .config import ConfigError, ExperimentConfig, read_config_file, resolve, validate
from .train import CONFIG_YAML


@dataclass(frozen=True)
class RunPlan:
    config: ExperimentConfig
    out_dir: Path
    resume: bool        # a checkpoint exists and --resume was given


def plan_runs(config: str | Path | None, overrides: list[str] = (), methods: list[str] | None = None,
              out: str | Path | None = None, resume: bool = False) -> list[RunPlan]:
    """Validated runs for `config` (a YAML path or packaged config name). With `resume`, runs that
    have a checkpoint continue and the others start; without a config, `resume` continues the
    run(s) found in `out` with their saved configs."""
    if config is None:
        if not resume or out is None:
            raise ConfigError("--config is required (except with --resume --out RUN_DIR)")
        return _resume_existing(Path(out), overrides)
    resolved = resolve(read_config_file(config), list(overrides), methods)
    plans = []
    for method, cfg in resolved.items():
        base = Path(out) if out is not None else Path("runs") / cfg.name
        if method is not None:
            cfg = dataclasses.replace(cfg, name=method)
        out_dir = base / method if method is not None else base
        has_checkpoint = checkpoint_path(out_dir).exists()
        if has_checkpoint and not resume:
            raise ConfigError(f"'{out_dir}' already holds a run (checkpoint.pt); pass --resume to continue it "
                              "or choose another --out")
        plans.append(RunPlan(cfg, out_dir, resume and has_checkpoint))
    return plans


def _resume_existing(out: Path, overrides: list[str]) -> list[RunPlan]:
    if overrides:
        raise ConfigError("--set needs --config (a resumed run keeps the config it was started with)")
    dirs = [out] if checkpoint_path(out).exists() else sorted(p.parent for p in out.glob("*/checkpoint.pt"))
    if not dirs:
        raise ConfigError(f"--resume: no checkpoint.pt in '{out}' or its subdirectories")
    return [RunPlan(validate(read_config_file(d / CONFIG_YAML)), d, True) for d in dirs]
