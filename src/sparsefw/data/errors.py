"""Errors raised when a dataset is missing, unreadable or needs an optional dependency."""
from __future__ import annotations

FASHION_MNIST_HINT = ("install it with `apt-get install dataset-fashion-mnist` (files land in "
                      "/usr/share/datasets/fashion-mnist) or pass data_dir / --data-dir pointing to a "
                      "directory with the four IDX files (train-images-idx3-ubyte[.gz], ...)")
FORTUNES_HINT = ("install it with `apt install fortunes` (Debian's fortune cookie files land in "
                 "/usr/share/games/fortunes) or pass data_dir / --data-dir pointing to a directory of "
                 "fortune files (fortunes separated by lines holding only '%')")
VISION_HINT = "this dataset needs torchvision: `pip install sparsefw[vision]`"


class DatasetNotFoundError(FileNotFoundError):
    """A dataset's files are not where they were looked for; the message says how to get them."""


class DatasetFormatError(ValueError):
    """A dataset file exists but is truncated, corrupt or not in the expected format."""


def require_torchvision():
    """Import torchvision lazily; an ImportError naming the extra to install if it is absent."""
    try:
        import torchvision
    except ImportError as e:  # ModuleNotFoundError, or a broken install next to an incompatible torch
        raise ImportError(f"{VISION_HINT} (import failed: {e})") from e
    return torchvision
