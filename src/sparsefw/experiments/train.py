"""The training loop: one plain loop, no framework.

    setup = build_setup(cfg)                 # data, model, optimizer: everything a bad config breaks
    metrics = train(cfg, out_dir)            # epochs → metrics.json/.csv + checkpoint.pt every epoch
    metrics = train(cfg, out_dir, resume=True)   # continue exactly where the checkpoint stopped

Per iteration: forward (autocast on CUDA), loss (+ penalty), backward (GradScaler on CUDA),
optimizer step (+ proximal step), scheduler step; the loss is cross-entropy, over every token for
task "language_modeling". Per epoch: evaluation, metrics, checkpoint.
Under torchrun (WORLD_SIZE > 1) the model is wrapped in DistributedDataParallel — or, with
training.fsdp, sharded by FSDP2 (`fsdp`) — every rank sees its DistributedSampler shard, sums are
all-reduced, and only rank 0 writes or prints.
"""
from __future__ import annotations

import contextlib
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
import yaml
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim.lr_scheduler import LambdaLR
from torch.utils.data import DataLoader, DistributedSampler, Subset
from tqdm.auto import tqdm

from ..data import get_datasets
from ..data.base import DatasetInfo
from . import distributed, fsdp
from .checkpoint import CHECKPOINT_NAME, checkpoint_path, load_checkpoint, save_checkpoint
from .config import ConfigError, ExperimentConfig, differing_keys, to_dict
from .evaluation import evaluate, primary_metric, token_logits
from .io import remove_stale_temporaries, write_csv, write_json, write_text
from .models import build_experiment_model
from .optimizers import build_optimizer
from .reproducibility import rng_state, seed_everything, set_rng_state
from .schedules import LRFactor

METRICS_JSON, METRICS_CSV, CONFIG_YAML = "metrics.json", "metrics.csv", "config.yaml"
FW_GAP_EVERY = 10   # Frank-Wolfe gaps (mean and max over param groups) averaged over every 10th step


@dataclass
class Setup:
    """Everything a run needs, built before any file is written."""
    cfg: ExperimentConfig
    device: torch.device
    dist: distributed.DistInfo
    info: DatasetInfo
    model: nn.Module                 # the plain module (what checkpoints hold)
    train_loader: DataLoader
    test_loader: DataLoader
    optimizer: torch.optim.Optimizer
    penalty: Callable[[nn.Module], torch.Tensor] | None
    after_step: Callable[[], None] | None
    scheduler: LambdaLR
    scaler: torch.amp.GradScaler
    generator: torch.Generator
    use_amp: bool


def resolve_device(name: str, dist_info: distributed.DistInfo | None = None) -> torch.device:
    """'auto' → cuda (this rank's GPU under torchrun) if available, else cpu."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"config key 'training.device': not a device name, got {name!r}") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"config key 'training.device': CUDA is not available here, got {name!r}")
        if device.index is None:
            device = torch.device("cuda", dist_info.local_rank if dist_info else 0)
    return device


def _loaders(cfg: ExperimentConfig, train_ds, test_ds, dist_info, generator, device):
    pin = device.type == "cuda"
    common = dict(num_workers=cfg.data.num_workers, pin_memory=pin, persistent_workers=False)
    if dist_info.enabled:
        sampler = DistributedSampler(train_ds, dist_info.world_size, dist_info.rank, shuffle=True,
                                     seed=cfg.training.seed)
        train_loader = DataLoader(train_ds, cfg.data.batch_size, sampler=sampler, generator=generator, **common)
        test_ds = Subset(test_ds, range(dist_info.rank, len(test_ds), dist_info.world_size))  # exact shards
    else:
        train_loader = DataLoader(train_ds, cfg.data.batch_size, shuffle=True, generator=generator, **common)
    test_loader = DataLoader(test_ds, cfg.data.eval_batch_size, shuffle=False, **common)
    return train_loader, test_loader


def build_setup(cfg: ExperimentConfig) -> Setup:
    """Data, model, optimizer, schedule. Raises ConfigError for anything the config got wrong."""
    dist_info = distributed.env_info()
    device = resolve_device(cfg.training.device, dist_info)
    generator = seed_everything(cfg.training.seed)
    try:
        train_ds, test_ds, info = get_datasets(cfg.data.name, cfg.data.data_dir,
                                               tuple(cfg.data.subset) if cfg.data.subset else None,
                                               augment=cfg.data.augment, seed=cfg.training.seed)
    except (ValueError, OSError, ImportError) as e:    # OSError: missing or unreadable files
        raise ConfigError(f"config key 'data': {e}") from None
    model = build_experiment_model(cfg.model, info, cfg.training.seed).to(device)
    example_inputs = train_ds[0][0].unsqueeze(0).to(device)    # one input, for channel analyses
    optimizer, penalty, after_step = build_optimizer(cfg.optimizer, model, example_inputs)
    sharded = cfg.training.fsdp and dist_info.enabled
    if sharded:
        model = _shard(cfg, model, optimizer, dist_info, device)
    train_loader, test_loader = _loaders(cfg, train_ds, test_ds, dist_info, generator, device)
    iters = len(train_loader)
    if iters == 0:
        raise ConfigError(f"config key 'data.batch_size': no training batches (dataset of {len(train_ds)})")
    s = cfg.schedule
    try:
        factor = LRFactor(s.name, cfg.training.epochs * iters, iters, warmup_epochs=s.warmup_epochs,
                          step_size=s.step_size, milestones=s.milestones, gamma=s.gamma)
    except ValueError as e:
        raise ConfigError(f"config key 'schedule': {e}") from None
    # under FSDP2 mixed precision is its policy (training.fsdp_*_dtype): no autocast, no GradScaler
    use_amp = cfg.training.amp and device.type == "cuda" and not sharded
    return Setup(cfg, device, dist_info, info, model, train_loader, test_loader, optimizer, penalty, after_step,
                 LambdaLR(optimizer, factor), torch.amp.GradScaler(device.type, enabled=use_amp), generator, use_amp)


def _shard(cfg: ExperimentConfig, model: nn.Module, optimizer, dist_info, device) -> nn.Module:
    """The model sharded by FSDP2 (`fsdp.shard_model`; the process group is joined first)."""
    try:
        policy = fsdp.policy(cfg.training.fsdp_param_dtype, cfg.training.fsdp_reduce_dtype)
    except ValueError as e:
        raise ConfigError(f"config key 'training': {e}") from None
    distributed.init(dist_info, device)
    return fsdp.shard_model(model, optimizer, device, dist_info.world_size, policy)


def _evaluate(s: Setup) -> dict[str, float]:
    """`evaluate` on every rank's test shard (under FSDP2 on unsharded parameters)."""
    sharded = s.cfg.training.fsdp and s.dist.enabled
    with fsdp.unsharded(s.model) if sharded else contextlib.nullcontext():
        return evaluate(s.model, s.test_loader, s.info.task, s.info.num_classes, s.device, s.dist, s.use_amp)


def _train_one_epoch(s: Setup, net: nn.Module, epoch: int) -> dict[str, float]:
    """One pass over the training data; returns train loss/accuracy (all ranks) and FW-gap statistics."""
    net.train()
    sampler = s.train_loader.sampler
    if isinstance(sampler, DistributedSampler):
        sampler.set_epoch(epoch)
    if hasattr(s.train_loader.dataset, "set_epoch"):
        s.train_loader.dataset.set_epoch(epoch)
    sums = torch.zeros(3, dtype=torch.float64, device=s.device)      # loss·n, n, correct
    gap_means, gap_maxes = [], []
    show = s.cfg.training.progress and s.dist.is_main and sys.stderr.isatty()
    bar = tqdm(s.train_loader, desc=f"epoch {epoch + 1}/{s.cfg.training.epochs}", leave=False, disable=not show)
    for step, (x, y) in enumerate(bar):
        x, y = x.to(s.device, non_blocking=True), y.to(s.device, non_blocking=True)
        with torch.autocast(device_type=s.device.type, dtype=torch.float16, enabled=s.use_amp):
            logits, y = token_logits(net(x), y, s.info.task)     # language models: one row per token
            loss = F.cross_entropy(logits, y)
        objective = loss if s.penalty is None else loss + s.penalty(s.model)
        s.optimizer.zero_grad(set_to_none=True)
        s.scaler.scale(objective).backward()
        s.scaler.step(s.optimizer)
        s.scaler.update()
        if s.after_step is not None:
            s.after_step()
        s.scheduler.step()
        with torch.no_grad():
            sums += torch.stack([loss.detach().double() * y.numel(), torch.tensor(y.numel(), dtype=torch.float64,
                                 device=s.device), (logits.argmax(1) == y).sum().double()])
        if hasattr(s.optimizer, "fw_gaps") and step % FW_GAP_EVERY == 0:   # reading syncs with the device
            gaps = [g for g in s.optimizer.fw_gaps() if not math.isnan(g)]
            if gaps:
                gap_means.append(sum(gaps) / len(gaps))
                gap_maxes.append(max(gaps))
        if show:
            bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
    sums = distributed.all_reduce_sum(sums, s.dist).cpu()
    out = {"train_loss": float(sums[0] / sums[1]), "train_accuracy": float(sums[2] / sums[1])}
    if gap_means:
        out["fw_gap_mean"] = sum(gap_means) / len(gap_means)
        out["fw_gap_max"] = sum(gap_maxes) / len(gap_maxes)
    return out


def _broadcast_buffers(model: nn.Module, dist_info: distributed.DistInfo) -> None:
    """Rank 0's BN statistics to every rank (DDP syncs them only at the start of each forward)."""
    if dist_info.enabled:
        for buffer in model.buffers():
            torch.distributed.broadcast(buffer, src=0)


def _write_metrics(out_dir: Path, cfg: ExperimentConfig, history: list[dict], extra: dict | None = None) -> None:
    write_json(out_dir / METRICS_JSON, {"name": cfg.name, "epochs": history, **(extra or {})})
    write_csv(out_dir / METRICS_CSV, history)


def check_run_dir(out_dir: Path, resume: bool) -> None:
    """Refuse to overwrite a run unless resuming; resuming needs a checkpoint."""
    exists = checkpoint_path(out_dir).exists()
    if exists and not resume:
        raise ConfigError(f"--out '{out_dir}' already holds a run ({CHECKPOINT_NAME}); pass --resume to continue "
                          "it or choose another output directory")
    if resume and not exists:
        raise ConfigError(f"--resume: no {CHECKPOINT_NAME} in '{out_dir}'")


def train(cfg: ExperimentConfig, out_dir: str | Path, resume: bool = False,
          stop_after_epochs: int | None = None) -> list[dict]:
    """Train `cfg` into `out_dir`; with `resume`, continue from its checkpoint (the saved config must
    equal `cfg`). `stop_after_epochs` ends this call early (the schedule still spans training.epochs).
    Returns the per-epoch metrics of the whole run."""
    out_dir = Path(out_dir)
    check_run_dir(out_dir, resume)
    s = build_setup(cfg)
    distributed.init(s.dist, s.device)
    net = s.model
    try:
        history, start = _restore(s, out_dir, cfg) if resume else ([], 0)
        if resume and s.dist.is_main:
            remove_stale_temporaries(out_dir)  # half-written files of the interrupted run
        if not resume and s.dist.is_main:
            out_dir.mkdir(parents=True, exist_ok=True)
            write_text(out_dir / CONFIG_YAML, yaml.safe_dump(to_dict(cfg), sort_keys=False))
        net = (DistributedDataParallel(s.model, device_ids=[s.device.index] if s.device.type == "cuda" else None)
               if s.dist.enabled and not cfg.training.fsdp else s.model)
        metric = primary_metric(s.info.task)
        end = cfg.training.epochs if stop_after_epochs is None else min(cfg.training.epochs, start + stop_after_epochs)
        for epoch in range(start, end):
            t0 = time.perf_counter()
            row = {"epoch": epoch + 1, "lr": _scheduled_lr(s), **_train_one_epoch(s, net, epoch)}
            _broadcast_buffers(s.model, s.dist)
            test = _evaluate(s)
            row.update({f"test_{k}": v for k, v in test.items()})
            row["epoch_time"] = time.perf_counter() - t0
            history.append(row)
            states = _full_states(s)
            if s.dist.is_main:
                _end_of_epoch(s, out_dir, history, metric, states)
        if cfg.training.check_rank_consistency and not cfg.training.fsdp:   # FSDP2 ranks hold different shards
            digests = distributed.gather_digests(s.model, s.dist)
            if len(set(digests)) != 1:
                raise RuntimeError(f"ranks diverged: parameter digests {digests}")
            if s.dist.is_main:
                _write_metrics(out_dir, cfg, history, {"rank_param_digests": digests})
    finally:
        net = None              # DDP's reducer must not hold the last reference to the process group
        distributed.teardown(s.dist)
    return history


def _full_states(s: Setup) -> tuple[dict, dict]:
    """(model, optimizer) state dicts to checkpoint: under FSDP2 the full ones (`fsdp.full_state`,
    every rank takes part), else the modules' own."""
    if s.cfg.training.fsdp and s.dist.enabled:
        return fsdp.full_state(s.model, s.optimizer)
    return s.model.state_dict(), s.optimizer.state_dict()


def _end_of_epoch(s: Setup, out_dir: Path, history: list[dict], metric: str, states: tuple[dict, dict]) -> None:
    """Checkpoint, metrics files and one printed line (rank 0 only)."""
    cfg, row = s.cfg, history[-1]
    save_checkpoint(out_dir, {
        "model": states[0], "optimizer": states[1],
        "scheduler": s.scheduler.state_dict(), "scaler": s.scaler.state_dict(),
        "rng": rng_state(s.generator), "epoch": row["epoch"], "metrics": history, "config": to_dict(cfg)})
    _write_metrics(out_dir, cfg, history)
    gap = f"  fw gap {row['fw_gap_mean']:.3g}" if "fw_gap_mean" in row else ""
    print(f"[{cfg.name}] epoch {row['epoch']}/{cfg.training.epochs}  loss {row['train_loss']:.4f}  "
          f"train acc {row['train_accuracy']:.4f}  test {metric} {row[f'test_{metric}']:.4f}  "
          f"lr {row['lr']:.4g}{gap}  {row['epoch_time']:.1f}s", flush=True)


def _scheduled_lr(s) -> float:
    """The optimizer's own lr as scheduled now: that of the first param group that started at the
    optimizer's lr (groups with their own step, e.g. the fixed Frank-Wolfe step of the step rule,
    are scheduled alike but from another value)."""
    base = s.optimizer.defaults["lr"]
    first = next((i for i, lr in enumerate(s.scheduler.base_lrs) if lr == base), 0)
    return s.optimizer.param_groups[first]["lr"]


def _restore(s: Setup, out_dir: Path, cfg: ExperimentConfig) -> tuple[list[dict], int]:
    """Load the checkpoint of `out_dir` into the set-up; (metrics so far, epochs done)."""
    state = load_checkpoint(out_dir, map_location=s.device)
    diff = sorted(differing_keys(state["config"], to_dict(cfg)))    # absent equals null (older configs)
    if diff:
        raise ConfigError(f"--resume: the config differs from the checkpoint's at {', '.join(diff)}")
    if s.cfg.training.fsdp and s.dist.enabled:
        fsdp.load_full_state(s.model, s.optimizer, state["model"], state["optimizer"])
    else:
        s.model.load_state_dict(state["model"])
        s.optimizer.load_state_dict(state["optimizer"])
    s.scheduler.load_state_dict(state["scheduler"])
    s.scaler.load_state_dict(state["scaler"])
    set_rng_state(state["rng"], s.generator)
    return list(state["metrics"]), int(state["epoch"])
