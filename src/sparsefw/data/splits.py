"""Deterministic stratified index selection: fixed train/test splits and class-balanced subsets."""
from __future__ import annotations

import torch


def _allocate(counts: torch.Tensor, n: int) -> torch.Tensor:
    """Per-class quotas summing to n, proportional to `counts` (largest remainder; ties → lower class)."""
    exact = counts.double() * n / counts.sum()
    quota = exact.floor().long()
    missing = n - int(quota.sum())
    if missing:
        remainder = exact - quota
        order = torch.sort(-remainder, stable=True).indices  # stable: equal remainders keep class order
        quota[order[:missing]] += 1
    return quota


def stratified_indices(labels: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """n sorted indices into `labels`, class proportions kept, chosen at random with `seed`."""
    labels = torch.as_tensor(labels).long().cpu()
    if not (0 <= n <= labels.numel()):
        raise ValueError(f"n must lie in [0, {labels.numel()}], got n={n!r}")
    classes, inverse, counts = torch.unique(labels, return_inverse=True, return_counts=True)
    quota = _allocate(counts, n)
    perm = torch.randperm(labels.numel(), generator=torch.Generator().manual_seed(seed))
    by_class = perm[torch.sort(inverse[perm], stable=True).indices]      # grouped by class, random within
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.arange(labels.numel()) - starts[inverse[by_class]]     # position within its class
    return torch.sort(by_class[rank < quota[inverse[by_class]]]).values


def stratified_split(labels: torch.Tensor, n_test: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(train_indices, test_indices): a stratified test set of n_test, the rest for training."""
    test = stratified_indices(labels, n_test, seed)
    keep = torch.ones(len(labels), dtype=torch.bool)
    keep[test] = False
    return keep.nonzero().squeeze(1), test
