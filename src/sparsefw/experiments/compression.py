"""`sparsefw compress`: one compression of a trained run, saved so it can be loaded again.

    RUN/compressed/<kind>_<level>/  model.pt (state_dict), recipe.json, config.yaml, summary.json

The folder is self-contained: summary.json's "dataset" holds what the model's shape depends on
(num_classes, in_channels, image size), so `load_compressed(folder)` (also `sparsefw.load_compressed`)
needs neither the training run nor the data. It builds the original architecture from config.yaml,
applies recipe.json (`sparsefw.compress.rebuild`) and loads model.pt with weights_only=True.
"""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import yaml
from torch import nn

from .. import compress
from ..data import DatasetInfo
from .checkpoint import CheckpointError, load_plain
from .config import read_config_file, to_dict, validate
from .evaluation import evaluate, primary_metric
from .io import save_torch, write_json, write_text
from .models import build_experiment_model
from .sweep import calibration_batches, check_kind, compress_model, load_trained


def compress_and_save(run: str | os.PathLike, kind: str, level: float, out: str | os.PathLike | None = None,
                      device: str = "cpu", scope: str = "global", criterion: str = "l1",
                      bn_recalibration: int | None = None) -> tuple[dict, Path]:
    """Compress the run's model once with `kind` (one of COMPRESSION_KINDS, as in sweeps) at `level`
    (fraction removed); evaluate both; save. Returns (summary, output directory). Low-rank layers and
    `bn_recalibration` (training batches for re-estimating BatchNorm statistics; None: the run's sweep
    setting) follow the run's sweep config."""
    check_kind(kind)
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1) (fraction removed), got level={level!r}")
    model, cfg, loader, info = load_trained(run, device)
    if bn_recalibration is None:
        bn_recalibration = cfg.sweep.bn_recalibration
    if isinstance(bn_recalibration, bool) or not isinstance(bn_recalibration, int) or bn_recalibration < 0:
        raise ValueError(f"bn_recalibration must be a non-negative integer, got {bn_recalibration!r}")
    example = next(iter(loader))[0][:1].to(device)
    small, recipe = compress_model(model, kind, level, example, scope, criterion, cfg.sweep.lowrank_layers,
                                   return_recipe=True)
    if bn_recalibration:
        small = compress.recalibrate_batchnorm(small, calibration_batches(cfg, bn_recalibration))
    small.eval()
    metric = primary_metric(info.task)
    dense_score = evaluate(model, loader, info.task, info.num_classes, device)[metric]
    score = evaluate(small, loader, info.task, info.num_classes, device)[metric]
    sizes = compress.summarize(model, small, example).as_dict()
    summary = {"kind": kind, "level": level, f"dense_{metric}": dense_score, metric: score,
               "relative_drop": (dense_score - score) / dense_score if dense_score else float("nan"),
               "bn_recalibration": bn_recalibration, **sizes,
               "dataset": dataclasses.asdict(info)}
    run = Path(run)
    out = Path(out) if out is not None else (run if run.is_dir() else run.parent) / "compressed" / f"{kind}_{level:g}"
    save_torch(out / "model.pt", small.state_dict())
    write_json(out / "recipe.json", recipe)
    write_text(out / "config.yaml", yaml.safe_dump(to_dict(cfg), sort_keys=False))
    write_json(out / "summary.json", summary)
    return summary, out


def load_compressed(path: str | os.PathLike, device: str = "cpu") -> nn.Module:
    """The compressed model saved by `compress_and_save` (`sparsefw compress`) in folder `path`, in
    eval mode; nothing but that folder is read, and no Python object is unpickled."""
    path = Path(path)
    cfg = validate(read_config_file(path / "config.yaml"))
    info = DatasetInfo(**json.loads((path / "summary.json").read_text())["dataset"])
    original = build_experiment_model(cfg.model, info, cfg.training.seed).to(device)
    model = compress.rebuild(original, json.loads((path / "recipe.json").read_text()))
    state = load_plain(path / "model.pt", device, what="compressed model")
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as e:    # wrong keys or shapes, or not a state_dict
        raise CheckpointError(f"compressed model '{path / 'model.pt'}' does not fit its recipe.json: "
                              f"{str(e).splitlines()[0]}") from e
    return model.eval()
