"""Training checkpoints: one file per run directory, replaced atomically after every epoch.

Contents (tensors and plain data only, loaded with torch.load(weights_only=True)): model state,
optimizer, scheduler and grad-scaler states, RNG states, the number of finished epochs, the
metrics so far and the resolved config, plus "sha256": a digest of all of it. torch's zip reader
checks no checksum, so a flipped byte inside tensor data would otherwise load silently. A file that
is truncated, corrupt (digest mismatch), holds anything else (Python objects are never unpickled)
or lacks these keys raises CheckpointError naming the file; files without a digest (written before
it existed) load unverified.
"""
from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

import torch

from .io import save_torch

CHECKPOINT_NAME = "checkpoint.pt"
CHECKPOINT_KEYS = ("model", "optimizer", "scheduler", "scaler", "rng", "epoch", "metrics", "config")
DIGEST_KEY = "sha256"


class CheckpointError(ValueError):
    """A checkpoint file that exists but cannot be used: truncated, corrupt or not a training checkpoint."""


def checkpoint_path(run_dir: str | os.PathLike) -> Path:
    return Path(run_dir) / CHECKPOINT_NAME


def save_checkpoint(run_dir: str | os.PathLike, state: dict) -> Path:
    return save_torch(checkpoint_path(run_dir), {**state, DIGEST_KEY: content_digest(state)})


def content_digest(obj) -> str:
    """SHA-256 over a nest of dicts, lists and tuples: every tensor's dtype, shape and bytes, every
    other value's repr, keys in order. Equal after a torch.save/torch.load round trip iff unchanged."""
    h = hashlib.sha256()

    def visit(x):
        if isinstance(x, torch.Tensor):
            t = x.detach().cpu().contiguous().reshape(-1)
            h.update(f"tensor {t.dtype} {tuple(x.shape)}:".encode())
            h.update(t.view(torch.uint8).numpy())
        elif isinstance(x, dict):
            h.update(b"{")
            for key, value in x.items():
                h.update(f"{key!r}:".encode())
                visit(value)
            h.update(b"}")
        elif isinstance(x, (list, tuple)):
            h.update(b"(" if isinstance(x, tuple) else b"[")
            for value in x:
                visit(value)
            h.update(b"]")
        else:
            h.update(f"{x!r},".encode())

    visit(obj)
    return h.hexdigest()


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """A checkpoint file, or the checkpoint inside a run directory."""
    path = Path(path)
    if path.is_dir():
        path = checkpoint_path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at '{path}'")
    state = load_plain(path, map_location)
    missing = [k for k in CHECKPOINT_KEYS if k not in state] if isinstance(state, dict) else list(CHECKPOINT_KEYS)
    if missing:
        raise CheckpointError(f"checkpoint '{path}' is not a sparsefw training checkpoint (missing {missing})")
    digest = state.pop(DIGEST_KEY, None)
    if digest is not None and digest != content_digest(state):
        raise CheckpointError(f"checkpoint '{path}' is corrupt: its contents do not match their SHA-256 digest")
    return state


def load_plain(path: str | os.PathLike, map_location: str | torch.device = "cpu", what: str = "checkpoint"):
    """torch.load(weights_only=True) of an existing file; a damaged one raises CheckpointError naming it."""
    with open(path, "rb") as f:        # an unreadable file raises its OSError here, not below
        try:
            return torch.load(f, map_location=map_location, weights_only=True)
        except MemoryError:
            raise
        except Exception as e:          # torch.load raises many types for damaged files
            raise CheckpointError(f"{what} '{path}' cannot be loaded: it is truncated or corrupt, or holds "
                                  f"more than tensors and plain data ({_reason(e)})") from e


def _reason(error: Exception) -> str:
    """The informative sentence of a torch.load error, without the weights-only unpickler's advice
    (which suggests weights_only=False: never for a file that failed to load)."""
    text = str(error)
    found = re.search(r"WeightsUnpickler error:\s*(\S.*)", text)
    boilerplate = ("Weights only load failed", "Please file an issue", "Check the documentation", "(1)", "(2)")
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith(boilerplate)]
    detail = found.group(1) if found else lines[0] if lines else ""
    detail = detail.split(". ")[0].rstrip(".")
    return f"{type(error).__name__}: {detail}" if detail else type(error).__name__
