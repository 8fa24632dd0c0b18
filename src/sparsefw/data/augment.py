"""Random crop with padding and horizontal flip as tensor ops (the CIFAR recipe: crop 32, pad 4).

Deterministic: the crop offsets and flips of every item are drawn for a whole epoch at once from
a generator seeded with (seed, epoch), so results do not depend on worker count or batch order.
Call `set_epoch(e)` before each epoch, as with DistributedSampler.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset


class RandomCropFlip(Dataset):
    """Wrap a dataset of (image (C, H, W), target): pad by `padding` with `fill` (per channel,
    normally the normalised value of a black pixel), crop back to H×W at a random offset, and
    flip left-right with probability ½ if `flip`."""

    def __init__(self, dataset: Dataset, padding: int = 4, flip: bool = True,
                 fill: Sequence[float] | float = 0.0, seed: int = 0):
        if isinstance(padding, bool) or not isinstance(padding, int) or padding < 0:
            raise ValueError(f"padding must be an int >= 0, got padding={padding!r}")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"seed must be an int, got seed={seed!r}")
        self.dataset, self.padding, self.flip, self.seed = dataset, padding, bool(flip), seed
        self.fill = torch.as_tensor(fill, dtype=torch.float32).reshape(-1, 1, 1)
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        """Draw this epoch's offsets (N, 2) in [0, 2·padding] and flips (N,)."""
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
            raise ValueError(f"epoch must be an int >= 0, got epoch={epoch!r}")
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        n = len(self.dataset)
        self.epoch = epoch
        self.offsets = torch.randint(0, 2 * self.padding + 1, (n, 2), generator=g)
        self.flips = torch.randint(0, 2, (n,), generator=g).bool() & self.flip

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index):
        """One item, or a batch when `index` is a list/tensor of indices (vectorised)."""
        image, target = self.dataset[index]
        idx = torch.as_tensor(index).reshape(-1)
        batch = image.reshape(-1, *image.shape[-3:])                           # (B, C, H, W)
        h, w, p = batch.shape[-2], batch.shape[-1], self.padding
        fill = self.fill.to(batch.device, batch.dtype)
        padded = F.pad(batch - fill, (p, p, p, p)) + fill                      # pad with `fill`, per channel
        dev = batch.device
        dy, dx = self.offsets[idx, 0].to(dev), self.offsets[idx, 1].to(dev)
        cols = torch.arange(w, device=dev)
        cols = torch.where(self.flips[idx, None].to(dev), w - 1 - cols, cols) + dx[:, None]  # (B, W); mirrored
        rows = dy[:, None] + torch.arange(h, device=dev)                        # (B, H)
        b = torch.arange(len(idx), device=dev)[:, None, None, None]
        c = torch.arange(batch.shape[1], device=dev)[None, :, None, None]
        out = padded[b, c, rows[:, None, :, None], cols[:, None, None, :]]
        return out.reshape(image.shape), target
