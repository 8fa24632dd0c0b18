"""`get_datasets(name)`: the one entry point to every dataset, with fixed splits and subsets."""
from __future__ import annotations

import importlib.util
from typing import Callable

import torch
from torch.utils.data import Dataset, Subset

from .augment import RandomCropFlip
from .base import DatasetInfo, InMemoryDataset, TokenDataset
from .fashion import load_fashion_mnist
from .m2nist import N_TEST as M2NIST_TEST, N_TRAIN as M2NIST_TRAIN, load_m2nist
from .mnist import load_digits, load_mnist5k
from .splits import stratified_indices
from .text import load_fortunes
from .vision import load_cifar, load_imagenet

SUBSET_SEED = 0

# name → (loader(data_dir, augment), default augment, in-memory crop padding, in-memory flip)
_DATASETS: dict[str, tuple[Callable, bool, int, bool]] = {
    "mnist5k": (lambda d, a: load_mnist5k(), False, 2, False),
    "fashion_mnist": (lambda d, a: load_fashion_mnist(d), False, 2, True),
    "fashion_mnist32": (lambda d, a: load_fashion_mnist(d, padded=True), False, 4, True),
    "m2nist": (lambda d, a: load_m2nist(), False, 0, False),
    "digits": (lambda d, a: load_digits(), False, 1, False),
    "fortunes": (lambda d, a: load_fortunes(d), False, 0, False),
    "cifar10": (lambda d, a: load_cifar("cifar10", d, a), True, 0, False),
    "cifar100": (lambda d, a: load_cifar("cifar100", d, a), True, 0, False),
    "imagenet": (lambda d, a: load_imagenet(d, a), True, 0, False),
}
_TORCHVISION = {"cifar10", "cifar100", "imagenet"}


def available_datasets() -> list[str]:
    """Names `get_datasets` accepts here: torchvision ones only if torchvision is installed,
    "digits" only if scikit-learn is (the files of a listed dataset may still be missing)."""
    have_tv = importlib.util.find_spec("torchvision") is not None
    have_sk = importlib.util.find_spec("sklearn") is not None
    return [n for n in _DATASETS if (n not in _TORCHVISION or have_tv) and (n != "digits" or have_sk)]


def _check_subset(subset, sizes: tuple[int, int]) -> tuple[int, int] | None:
    if subset is None:
        return None
    ok = (isinstance(subset, (tuple, list)) and len(subset) == 2
          and all(isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in subset))
    if not ok:
        raise ValueError(f"subset must be None or a pair (n_train, n_test) of ints >= 1, got subset={subset!r}")
    for n, size, split in zip(subset, sizes, ("train", "test")):
        if n > size:
            raise ValueError(f"subset={tuple(subset)!r} asks for {n} {split} items but the split has {size}")
    return tuple(subset)


def _subset(ds: Dataset, n: int) -> Dataset:
    if isinstance(ds, TokenDataset):       # no classes: the first n of a seeded random order
        return ds.subset(torch.randperm(len(ds), generator=torch.Generator().manual_seed(SUBSET_SEED))[:n])
    labels = torch.as_tensor(ds.targets)
    idx = stratified_indices(labels, n, SUBSET_SEED)
    return ds.subset(idx) if isinstance(ds, InMemoryDataset) else Subset(ds, idx.tolist())


def get_datasets(name: str, data_dir=None, subset=None, augment: bool | None = None,
                 seed: int = 0) -> tuple[Dataset, Dataset, DatasetInfo]:
    """(train, test, info) for dataset `name` (see `available_datasets`).

    Splits are fixed. `subset=(n_train, n_test)` keeps a deterministic class-stratified subset of
    each split (for m2nist: that many canvases; for "fortunes": the first n windows of a seeded
    random order). `augment` (default: the paper's choice — on for
    CIFAR/ImageNet, off otherwise) wraps the in-memory training set in RandomCropFlip seeded with
    `seed`; call its set_epoch(e) each epoch. Items are (float32 image (C, H, W), int64 target);
    for the character corpus "fortunes" (task "language_modeling", `data.text`) (int64 token ids (64,),
    int64 next-token ids (64,)).
    """
    if name not in _DATASETS:
        raise ValueError(f"unknown dataset name={name!r}; choose one of {sorted(_DATASETS)}")
    if augment is not None and not isinstance(augment, bool):
        raise ValueError(f"augment must be None, True or False, got augment={augment!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an int, got seed={seed!r}")
    if name == "fortunes" and augment:
        raise ValueError("augment=True is not supported for the text dataset 'fortunes' (token windows have "
                         "no crops or flips)")
    loader, default_augment, padding, flip = _DATASETS[name]
    augment = default_augment if augment is None else augment
    if name == "m2nist":
        if augment:
            raise ValueError("augment=True is not supported for the segmentation dataset 'm2nist'")
        subset = _check_subset(subset, (M2NIST_TRAIN, M2NIST_TEST))
        return load_m2nist(*subset) if subset else load_m2nist()
    train, test, info = loader(data_dir, augment)
    subset = _check_subset(subset, (len(train), len(test)))
    if subset is not None:
        train, test = _subset(train, subset[0]), _subset(test, subset[1])
    if augment and name not in _TORCHVISION:
        train = RandomCropFlip(train, padding=padding, flip=flip, fill=info.raw_zero, seed=seed)
    return train, test, info
