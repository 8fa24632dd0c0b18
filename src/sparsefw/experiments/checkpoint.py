"""Training checkpoints: one file per run directory, replaced atomically after every epoch.

Contents (tensors and plain data only, loaded with torch.load(weights_only=True)): model state,
optimizer, scheduler and grad-scaler states, RNG states, the number of finished epochs, the
metrics so far and the resolved config.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

from .io import save_torch

CHECKPOINT_NAME = "checkpoint.pt"


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
    return torch.load(path, map_location=map_location, weights_only=True)
