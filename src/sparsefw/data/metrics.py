"""Evaluation metrics: top-k accuracy (classification, also per pixel) and mean IoU (segmentation).

Both come as counts that add up over batches (`topk_correct`, `confusion_matrix`) and as the
final ratios (`topk_accuracy`, `mean_iou`).
"""
from __future__ import annotations

from typing import Sequence

import torch


def _check_topk(topk: Sequence[int], num_classes: int) -> tuple[int, ...]:
    topk = tuple(topk)
    if not topk or any(isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= num_classes for k in topk):
        raise ValueError(f"topk must be a non-empty sequence of ints in [1, {num_classes}], got topk={topk!r}")
    return topk


def topk_correct(logits: torch.Tensor, targets: torch.Tensor, topk: Sequence[int] = (1,)) -> torch.Tensor:
    """For each k, how many targets are among the k largest logits (class dim 1).

    logits (N, C) with targets (N,), or (N, C, H, W) with targets (N, H, W) (counted per pixel).
    """
    if logits.ndim < 2 or targets.shape != logits.shape[:1] + logits.shape[2:]:
        raise ValueError(f"logits (N, C, ...) and targets (N, ...) do not match: "
                         f"{tuple(logits.shape)} vs {tuple(targets.shape)}")
    topk = _check_topk(topk, logits.shape[1])
    ranked = logits.topk(max(topk), dim=1).indices                          # (N, kmax, ...)
    hit = ranked == targets.unsqueeze(1)
    return torch.stack([hit[:, :k].any(1).sum() for k in topk])


def topk_accuracy(logits: torch.Tensor, targets: torch.Tensor, topk: Sequence[int] = (1,)) -> torch.Tensor:
    """Fraction of targets among the top-k logits, one float per k."""
    return topk_correct(logits, targets, topk).double() / max(targets.numel(), 1)


def confusion_matrix(pred: torch.Tensor, target: torch.Tensor, num_classes: int,
                     ignore_index: int | None = None) -> torch.Tensor:
    """(num_classes, num_classes) int64 counts, rows = target class, columns = predicted class."""
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be an int >= 1, got num_classes={num_classes!r}")
    if pred.shape != target.shape:
        raise ValueError(f"pred and target shapes differ: {tuple(pred.shape)} vs {tuple(target.shape)}")
    pred, target = pred.reshape(-1).long(), target.reshape(-1).long()
    if ignore_index is not None:
        keep = target != ignore_index
        pred, target = pred[keep], target[keep]
    if pred.numel() and (min(pred.min(), target.min()) < 0 or max(pred.max(), target.max()) >= num_classes):
        raise ValueError(f"class ids must lie in [0, {num_classes}) (num_classes={num_classes})")
    flat = torch.bincount(target * num_classes + pred, minlength=num_classes ** 2)
    return flat.reshape(num_classes, num_classes)


def iou_per_class(confusion: torch.Tensor) -> torch.Tensor:
    """IoU_c = TP/(TP + FP + FN) per class; NaN for classes absent from both target and prediction."""
    tp = confusion.diagonal().double()
    union = confusion.sum(0).double() + confusion.sum(1).double() - tp
    return torch.where(union > 0, tp / union.clamp_min(1), torch.full_like(tp, float("nan")))


def mean_iou(confusion: torch.Tensor) -> float:
    """Mean IoU over the classes present in target or prediction (NaN if none are)."""
    return float(iou_per_class(confusion).nanmean())
