"""Helpers shared by the reliability tests."""
import os
import socket
import sys
from pathlib import Path

from sparsefw.data.fashion import DEFAULT_DIR as FASHION_DIR

HERE = Path(__file__).parent
# real images either way; Fashion-MNIST (apt package) loads in ~1 s in a fresh process, mnist5k in ~5 s
DATASET = "fashion_mnist" if FASHION_DIR.is_dir() else "mnist5k"
STEPS_PER_EPOCH = 4                     # 256 training images, batches of 64
TINY_RUN = {
    "name": "tiny",
    "data": {"name": DATASET, "subset": [256, 100], "batch_size": 64, "eval_batch_size": 100,
             "augment": True},          # augmentation draws random numbers every epoch: resume must restore them
    "model": {"name": "cnn", "widths": [4, 4, 8, 8]},
    "optimizer": {"name": "sfw", "mode": "spectral_k_support", "k": 0.5, "width": 5.0, "lr": 0.1},
    "schedule": {"name": "linear"},
    "training": {"epochs": 3, "seed": 5, "progress": False, "device": "cpu"},
}


def one_thread_env(**extra) -> dict:
    """The environment for a subprocess: this one, one thread per process, plus `extra`."""
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", **extra}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def script(name: str) -> list[str]:
    """[python, path of a script next to this file]."""
    return [sys.executable, str(HERE / name)]
