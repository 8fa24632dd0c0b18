"""One trained model → one-shot compression at every level of every kind, no retraining.

Kinds and levels (a level is always the fraction REMOVED):

    unstructured   level = sparsity: global (or per-layer) magnitude pruning of conv/linear weights
    filters        level = fraction of output filters removed from every Conv2d (L1 or L2 norm), per layer
    channels       level = fraction of channels removed from every coupled channel space (residual
                   streams, MLP hidden units too; joint L1 or L2 norm): remove_filters(coupled=True)
    lowrank        level = fraction of rank removed; every layer keeps rank_kept = 1 − level

Each row: run, kind, level (and rank_kept for lowrank), the metrics of `evaluate` (accuracy, top5 or
mIoU), relative_drop = (dense − compressed)/dense of the primary metric, stored parameters, nonzero
parameters (what unstructured pruning reduces), FLOPs as counted by torch's FlopCounterMode (dense
arithmetic: zeros still cost) and their ratios to the dense model.
With `sweep.latency: [kind, ...]` (true: every kind) the dense row and the rows of those kinds also
carry measured latency: the dense model and every compressed model of those kinds run interleaved
(`compress.measure_latency`: one eval forward each per round, 3 warm-up rounds, then
LATENCY_ROUNDS timed ones) on the first test batch (`data.eval_batch_size` images) with torch's
current thread count, after the accuracy sweep; each row gets latency_ms (the median), speedup
(dense latency_ms / latency_ms) and latency_batch, latency_threads, latency_rounds. The timed models
are kept until then; the other kinds cost no time.
With `sweep.bn_recalibration: B` every compressed model first re-estimates its BatchNorm statistics
on the same B training batches (no augmentation, shuffled with the run's seed); rows then carry
`bn_recalibration: B`.
"""
from __future__ import annotations

import copy
import itertools
import os
import sys
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from .. import compress
from ..compress.metrics import count_nonzero_parameters
from ..data import get_datasets
from .checkpoint import load_checkpoint
from .config import COMPRESSION_KINDS, ExperimentConfig, SweepConfig, validate
from .evaluation import evaluate, primary_metric
from .io import write_csv, write_json
from .models import build_experiment_model
from .report import SWEEP_JSON, plot_sweeps

SWEEP_CSV, SWEEP_PNG = "sweep.csv", "sweep.png"
LATENCY_ROUNDS = 20       # timed rounds of the interleaved latency measurement (median over them)


def unaugmented_splits(cfg: ExperimentConfig):
    """(train, test, info) of the run's dataset, without augmentation."""
    return get_datasets(cfg.data.name, cfg.data.data_dir, tuple(cfg.data.subset) if cfg.data.subset else None,
                        augment=False)


def load_trained(run: str | os.PathLike, device: str | torch.device = "cpu"):
    """(model in eval mode, config, test loader, dataset info) of a run directory or checkpoint file."""
    state = load_checkpoint(run, map_location=device)
    cfg = validate(state["config"])
    _, test_ds, info = unaugmented_splits(cfg)
    model = build_experiment_model(cfg.model, info, cfg.training.seed)
    model.load_state_dict(state["model"])
    model.to(device).eval()
    loader = DataLoader(test_ds, cfg.data.eval_batch_size, shuffle=False)
    return model, cfg, loader, info


def calibration_batches(cfg: ExperimentConfig, n_batches: int) -> list:
    """The first `n_batches` batches of the run's training data (no augmentation, shuffled with the
    run's seed, the run's batch size): what BatchNorm recalibration reads, the same for every level."""
    train_ds, _, _ = unaugmented_splits(cfg)
    loader = DataLoader(train_ds, cfg.data.batch_size, shuffle=True,
                        generator=torch.Generator().manual_seed(cfg.training.seed))
    return list(itertools.islice(loader, n_batches))


def compress_model(model: nn.Module, kind: str, level: float, example_inputs: torch.Tensor,
                   scope: str = "global", criterion: str = "l1", lowrank_layers: str = "conv",
                   return_recipe: bool = False):
    """A new compressed module (with `return_recipe`, the pair (module, recipe)); `model` is untouched.
    `example_inputs` (one test image is enough: the capture runs the model in eval mode) is what
    filter and channel removal capture the graph with."""
    check_kind(kind)
    if kind == "unstructured":
        return compress.prune(model, sparsity=level, scope=scope, return_recipe=return_recipe)
    if kind in ("filters", "channels"):
        return compress.remove_filters(model, amount=level, example_inputs=example_inputs, criterion=criterion,
                                       return_recipe=return_recipe, coupled=kind == "channels")
    return compress.factorize(model, rank=1.0 - level, layers=lowrank_layers, return_recipe=return_recipe)


def check_kind(kind: str) -> None:
    if kind not in COMPRESSION_KINDS:
        raise ValueError(f"kind must be one of {', '.join(map(repr, COMPRESSION_KINDS))}, got kind={kind!r}")


def _size_columns(dense: nn.Module, small: nn.Module, example_inputs: torch.Tensor) -> dict:
    """Stored parameters, nonzero parameters, FLOPs (dense count) and their ratios to `dense`."""
    p, p_dense = compress.count_parameters(small), compress.count_parameters(dense)
    nz, nz_dense = count_nonzero_parameters(small), count_nonzero_parameters(dense)
    f, f_dense = compress.count_flops(small, example_inputs), compress.count_flops(dense, example_inputs)
    return {"params": p, "params_ratio": p / p_dense, "nonzero_params": nz, "nonzero_ratio": nz / nz_dense,
            "flops": f, "flops_ratio": f / f_dense if f_dense else float("nan")}


def _add_latency(timed: list[tuple[dict, nn.Module]], inputs: torch.Tensor) -> None:
    """Time the (row, model) pairs' models (the dense one first) interleaved on `inputs`; write each
    median, the speed-up over the first and how they were measured into its row."""
    ms = compress.measure_latency([model for _, model in timed], inputs, repeats=LATENCY_ROUNDS)
    setting = {"latency_batch": len(inputs), "latency_threads": torch.get_num_threads(),
               "latency_rounds": LATENCY_ROUNDS}
    for (row, _), t in zip(timed, ms):
        row.update(latency_ms=t, speedup=ms[0] / t, **setting)


def run_sweep(model: nn.Module, loader: DataLoader, task: str, num_classes: int, cfg: SweepConfig,
              label: str, device: str | torch.device = "cpu", progress: bool = False,
              calibration: list | None = None) -> list[dict]:
    """Rows for the dense model and every (kind, level) of `cfg`, in that order. `calibration`:
    the input batches for `cfg.bn_recalibration` (required when it is positive)."""
    if cfg.bn_recalibration and not calibration:
        raise ValueError(f"sweep.bn_recalibration={cfg.bn_recalibration} needs calibration batches")
    model = model.eval()
    batch = next(iter(loader))[0].to(device)
    example = batch[:1]
    metric = primary_metric(task)
    dense_eval = evaluate(model, loader, task, num_classes, device)
    rows = [{"run": label, "kind": "dense", "level": 0.0, **dense_eval, "relative_drop": 0.0,
             **_size_columns(model, model, example)}]
    timed_kinds = COMPRESSION_KINDS if cfg.latency is True else cfg.latency or ()
    timed = [(rows[0], model)]
    jobs = [(kind, level) for kind in COMPRESSION_KINDS for level in getattr(cfg, kind)]
    for kind, level in tqdm(jobs, desc=f"sweep {label}", leave=False, disable=not (progress and sys.stderr.isatty())):
        small = compress_model(model, kind, level, example, cfg.scope, cfg.criterion, cfg.lowrank_layers).eval()
        if cfg.bn_recalibration:
            small = compress.recalibrate_batchnorm(small, calibration, max_batches=cfg.bn_recalibration)
        scores = evaluate(small, loader, task, num_classes, device)
        row = {"run": label, "kind": kind, "level": level}
        if kind == "lowrank":
            row["rank_kept"] = round(1.0 - level, 10)
        if cfg.bn_recalibration:
            row["bn_recalibration"] = cfg.bn_recalibration
        drop = (dense_eval[metric] - scores[metric]) / dense_eval[metric] if dense_eval[metric] else float("nan")
        rows.append({**row, **scores, "relative_drop": drop, **_size_columns(model, small, example)})
        if kind in timed_kinds:
            timed.append((rows[-1], small))
    if timed_kinds:
        _add_latency(timed, batch)
    return rows


def write_sweep(rows: list[dict], out_dir: str | os.PathLike, metric: str) -> dict[str, Path]:
    """sweep.json, sweep.csv and sweep.png (accuracy vs level, one panel per kind) into `out_dir`."""
    out_dir = Path(out_dir)
    paths = {"json": write_json(out_dir / SWEEP_JSON, {"metric": metric, "level": "fraction removed",
                                                       "rows": rows}),
             "csv": write_csv(out_dir / SWEEP_CSV, rows)}
    paths["png"] = plot_sweeps(rows, metric, out_dir / SWEEP_PNG)
    return paths


def sweep_run(run: str | os.PathLike, out_dir: str | os.PathLike | None = None, overrides: dict | None = None,
              device: str = "cpu", progress: bool = True) -> tuple[list[dict], dict[str, Path]]:
    """Load a trained run, sweep it (its config's `sweep` section updated by `overrides`), write the
    files next to the checkpoint (or into `out_dir`)."""
    model, cfg, loader, info = load_trained(run, device)
    sweep_cfg = cfg.sweep
    if overrides:
        merged = validate({"sweep": {**_plain(cfg.sweep), **overrides}})
        sweep_cfg = merged.sweep
    calibration = calibration_batches(cfg, sweep_cfg.bn_recalibration) if sweep_cfg.bn_recalibration else None
    rows = run_sweep(model, loader, info.task, info.num_classes, sweep_cfg, cfg.name, device, progress,
                     calibration)
    run = Path(run)
    target = Path(out_dir) if out_dir is not None else (run if run.is_dir() else run.parent)
    return rows, write_sweep(rows, target, primary_metric(info.task))


def _plain(section) -> dict:
    return copy.deepcopy(vars(section))
