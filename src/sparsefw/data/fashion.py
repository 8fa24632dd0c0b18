"""Fashion-MNIST (60k/10k, 28×28) from IDX files, and its 32×32×3 padded variant for ResNets."""
from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import torch

from .base import DatasetInfo, InMemoryDataset, normalize_uint8
from .errors import FASHION_MNIST_HINT, DatasetFormatError, DatasetNotFoundError
from .idx import read_idx

DEFAULT_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MEAN, FASHION_STD = 0.2860, 0.3530
_FILES = {("train", "images"): "train-images-idx3-ubyte", ("train", "labels"): "train-labels-idx1-ubyte",
          ("test", "images"): "t10k-images-idx3-ubyte", ("test", "labels"): "t10k-labels-idx1-ubyte"}


def find_idx_file(data_dir: Path, stem: str) -> Path:
    """<dir>/<stem>[.gz], or torchvision's layout <dir>/FashionMNIST/raw/<stem>[.gz]."""
    for folder in (data_dir, data_dir / "FashionMNIST" / "raw"):
        for name in (stem + ".gz", stem):
            if (folder / name).is_file():
                return folder / name
    raise DatasetNotFoundError(f"Fashion-MNIST file {stem}[.gz] not found in {data_dir} "
                               f"(nor in {data_dir / 'FashionMNIST' / 'raw'}); {FASHION_MNIST_HINT}")


@functools.lru_cache(maxsize=2)
def _load_split(data_dir: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    images = read_idx(find_idx_file(data_dir, _FILES[split, "images"]))
    labels = read_idx(find_idx_file(data_dir, _FILES[split, "labels"]))
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (28, 28):
        raise DatasetFormatError(f"Fashion-MNIST {split} images must be uint8 (N, 28, 28), "
                                 f"got {images.dtype} {images.shape}")
    if labels.ndim != 1 or len(labels) != len(images):
        raise DatasetFormatError(f"Fashion-MNIST {split} labels have shape {labels.shape}, "
                                 f"expected ({len(images)},)")
    if labels.size and labels.max() > 9:
        raise DatasetFormatError(f"Fashion-MNIST {split} labels must lie in 0..9, found {labels.max()}")
    images.setflags(write=False)
    labels.setflags(write=False)
    return images, labels


def fashion_mnist_raw(data_dir: str | Path | None = None, split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """uint8 images (N, 28, 28) and int labels of the "train" (60k) or "test" (10k) split."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got split={split!r}")
    data_dir = Path(DEFAULT_DIR if data_dir is None else data_dir).expanduser().resolve()
    if not data_dir.is_dir():
        raise DatasetNotFoundError(f"Fashion-MNIST directory {data_dir} does not exist; {FASHION_MNIST_HINT}")
    return _load_split(data_dir, split)


def load_fashion_mnist(data_dir=None, padded: bool = False) -> tuple[InMemoryDataset, InMemoryDataset, DatasetInfo]:
    """28×28×1, or with `padded` 32×32×3: zero-padded by 2 on each side and repeated to 3 channels."""
    pad, channels = (2, 3) if padded else (0, None)
    out = []
    for split in ("train", "test"):
        images, labels = fashion_mnist_raw(data_dir, split)
        if pad:
            images = np.pad(images, ((0, 0), (pad, pad), (pad, pad)))
        x = normalize_uint8(images, FASHION_MEAN, FASHION_STD)
        out.append(InMemoryDataset(x, torch.from_numpy(labels.astype(np.int64)), channels))
    c = channels or 1
    info = DatasetInfo("fashion_mnist32" if padded else "fashion_mnist", 10, c, 28 + 2 * pad,
                       "classification", (FASHION_MEAN,) * c, (FASHION_STD,) * c)
    return out[0], out[1], info
