"""CIFAR-10/100 and ImageNet (ImageFolder) through torchvision, only when it is installed.

Training transforms follow the paper: CIFAR random crop 32 (padding 4) + horizontal flip, then
normalisation with mean (0.4914, 0.4822, 0.4465), std (0.2023, 0.1994, 0.2010); ImageNet random
resized crop 224 + flip, test resize 256 + centre crop 224, the usual ImageNet statistics.
"""
from __future__ import annotations

from pathlib import Path

from .base import DatasetInfo
from .errors import DatasetNotFoundError, require_torchvision

CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _need_dir(name: str, data_dir, layout: str) -> Path:
    if data_dir is None or not Path(data_dir).expanduser().is_dir():
        raise DatasetNotFoundError(f"{name}: no dataset directory (data_dir={data_dir!r}); pass data_dir / "
                                   f"--data-dir pointing to {layout}")
    return Path(data_dir).expanduser()


def load_cifar(name: str, data_dir=None, augment: bool = True):
    """name "cifar10" or "cifar100" from torchvision's layout (<dir>/cifar-10-batches-py, ...)."""
    tv = require_torchvision()
    T = tv.transforms
    cls, classes, folder = {"cifar10": (tv.datasets.CIFAR10, 10, "cifar-10-batches-py"),
                            "cifar100": (tv.datasets.CIFAR100, 100, "cifar-100-python")}[name]
    root = _need_dir(name, data_dir, f"a directory containing {folder}/ (torchvision's CIFAR layout)")
    norm = [T.ToTensor(), T.Normalize(CIFAR_MEAN, CIFAR_STD)]
    train_tf = T.Compose(([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip()] if augment else []) + norm)
    try:
        train = cls(str(root), train=True, transform=train_tf, download=False)
        test = cls(str(root), train=False, transform=T.Compose(norm), download=False)
    except RuntimeError as e:   # torchvision: "Dataset not found or corrupted"
        raise DatasetNotFoundError(f"{name} not found in {root} (expected {folder}/): {e}") from e
    return train, test, DatasetInfo(name, classes, 3, 32, "classification", CIFAR_MEAN, CIFAR_STD)


def load_imagenet(data_dir=None, augment: bool = True):
    """ImageFolder datasets from <dir>/train and <dir>/val (one sub-folder per class)."""
    tv = require_torchvision()
    T = tv.transforms
    root = _need_dir("imagenet", data_dir, "a directory with train/ and val/ class sub-folders")
    for split in ("train", "val"):
        if not (root / split).is_dir():
            raise DatasetNotFoundError(f"imagenet: {root / split} is missing (expected ImageFolder layout)")
    norm = [T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    train_tf = [T.RandomResizedCrop(224), T.RandomHorizontalFlip()] if augment else [T.Resize(256), T.CenterCrop(224)]
    train = tv.datasets.ImageFolder(str(root / "train"), T.Compose(train_tf + norm))
    test = tv.datasets.ImageFolder(str(root / "val"), T.Compose([T.Resize(256), T.CenterCrop(224)] + norm))
    info = DatasetInfo("imagenet", len(train.classes), 3, 224, "classification", IMAGENET_MEAN, IMAGENET_STD)
    return train, test, info
