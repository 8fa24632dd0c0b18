"""In-memory datasets and the description every loader returns with them."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset


@dataclass(frozen=True)
class DatasetInfo:
    """What a model needs to know about a dataset.

    `mean`/`std` are the per-channel constants the inputs were normalised with,
    x = (raw/255 − mean)/std; `task` is "classification" (targets: class ids), "segmentation"
    (targets: (H, W) maps of class ids) or "language_modeling" (inputs: (T,) int64 token ids; targets:
    (T,) next-token ids; `num_classes` is then the vocabulary size, `in_channels` 1 and `image_size`
    the context length T; no mean/std).
    """
    name: str
    num_classes: int
    in_channels: int
    image_size: int
    task: str = "classification"
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()

    @property
    def raw_zero(self) -> tuple[float, ...]:
        """The normalised value of a black (raw 0) pixel per channel: −mean/std."""
        return tuple(-m / s for m, s in zip(self.mean, self.std))


class InMemoryDataset(Dataset):
    """Images (N, C, H, W) float32 and targets (N,) or (N, H, W) held as whole tensors.

    Items are (image, target.long()); a list/tensor index returns a whole batch at once. With
    `channels` set, single-channel images are returned repeated to that many channels as a view
    (`expand`), so a 3-channel variant costs no memory.
    """

    def __init__(self, images: torch.Tensor, targets: torch.Tensor, channels: int | None = None):
        if images.ndim != 4:
            raise ValueError(f"images must be (N, C, H, W), got shape {tuple(images.shape)}")
        if targets.shape[0] != images.shape[0]:
            raise ValueError(f"targets has {targets.shape[0]} rows, images has {images.shape[0]}")
        if channels is not None and images.shape[1] not in (1, channels):
            raise ValueError(f"channels={channels!r} needs 1-channel images, got {images.shape[1]} channels")
        self.images, self.targets, self.channels = images, targets, channels

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index):
        image = self.images[index]
        if self.channels is not None:
            image = image.expand(*image.shape[:-3], self.channels, *image.shape[-2:])
        return image, self.targets[index].long()

    def subset(self, indices: torch.Tensor) -> "InMemoryDataset":
        """A new dataset holding the rows `indices` (tensors indexed, not wrapped)."""
        return InMemoryDataset(self.images[indices], self.targets[indices], self.channels)


def normalize_uint8(images, mean: float, std: float) -> torch.Tensor:
    """uint8 array/tensor (N, H, W) of raw pixels → float32 (N, 1, H, W) = (x/255 − mean)/std."""
    x = torch.tensor(np.asarray(images), dtype=torch.float32).div_(255.0)   # a copy: inputs may be read-only
    return x.sub_(mean).div_(std).unsqueeze(1)


class TokenDataset(Dataset):
    """Token windows: inputs (N, T) and targets (N, T) int64 held as whole tensors (no float, no
    normalisation). Items are (inputs[i], targets[i]); a list/tensor index returns a whole batch.
    `images` is the inputs under the name the image datasets use, so code reading `ds.images` /
    `ds.targets` works on both. `vocabulary` is the string whose i-th character token id i stands for."""

    def __init__(self, inputs: torch.Tensor, targets: torch.Tensor, vocabulary: str):
        if inputs.ndim != 2 or inputs.dtype != torch.int64:
            raise ValueError(f"inputs must be int64 (N, T), got {inputs.dtype} {tuple(inputs.shape)}")
        if targets.shape != inputs.shape or targets.dtype != torch.int64:
            raise ValueError(f"targets must be int64 {tuple(inputs.shape)}, got {targets.dtype} {tuple(targets.shape)}")
        self.images, self.targets, self.vocabulary = inputs, targets, vocabulary

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index):
        return self.images[index], self.targets[index]

    def subset(self, indices: torch.Tensor) -> "TokenDataset":
        """A new dataset holding the windows `indices` (tensors indexed, not wrapped)."""
        return TokenDataset(self.images[indices], self.targets[indices], self.vocabulary)
