"""Training checkpoints: one file per run directory, replaced atomically after every epoch.

Contents (tensors and plain data only, loaded with torch.load(weights_only=True)): model state,
optimizer, scheduler and grad-scaler states, RNG states, the number of finished epochs, the
metrics so far and the resolved config. A file that is truncated, corrupt, holds anything else
(Python objects are never unpickled) or lacks these keys raises CheckpointError naming the file.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

from .io import save_torch

CHECKPOINT_NAME = "checkpoint.pt"
CHECKPOINT_KEYS = ("model", "optimizer", "scheduler", "scaler", "rng", "epoch", "metrics", "config")


class CheckpointError(ValueError):
    """A checkpoint file that exists but cannot be used: truncated, corrupt or not a training checkpoint."""


def checkpoint_path(run_dir: str | os.PathLike) -> Path:
    return Path(run_dir) / CHECKPOINT_NAME


def save_checkpoint(run_dir: str | os.PathLike, state: dict) -> Path:
    return save_torch(checkpoint_path(run_dir), state)


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """A checkpoint file, or the checkpoint inside a run directory."""
    path = Path(path)
    if path.is_dir():
        path = checkpoint_path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at '{path}'")
    with open(path, "rb") as f:        # an unreadable file raises its OSError here, not below
        try:
            state = torch.load(f, map_location=map_location, weights_only=True)
        except Exception as e:          # torch.load raises many types for damaged files
            raise CheckpointError(f"checkpoint '{path}' cannot be loaded: it is truncated or corrupt, or holds "
                                  f"more than tensors and plain data ({_reason(e)})") from e
    missing = [k for k in CHECKPOINT_KEYS if k not in state] if isinstance(state, dict) else list(CHECKPOINT_KEYS)
    if missing:
        raise CheckpointError(f"checkpoint '{path}' is not a sparsefw training checkpoint (missing {missing})")
    return state


def _reason(error: Exception) -> str:
    """The informative line of a torch.load error, without the weights-only unpickler's boilerplate
    (which would suggest weights_only=False: never for a file that failed to load)."""
    boilerplate = ("Weights only load failed", "Please file an issue", "Check the documentation")
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    detail = next((line for line in lines if not line.startswith(boilerplate)), "")
    return f"{type(error).__name__}: {detail}" if detail else type(error).__name__
