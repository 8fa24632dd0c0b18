"""Model evaluation as sums that add up over batches and ranks.

Classification: loss, top-1 accuracy ("accuracy") and top-5 accuracy ("top5", when there are at
least 5 classes). Segmentation: loss, pixel accuracy ("accuracy") and mean IoU ("miou") from the
summed confusion matrix. Language modelling (logits (B, T, V), targets (B, T)): every token counts,
"loss" is the mean token cross-entropy, "accuracy" and "top5" next-token accuracies, "perplexity"
exp(loss). The headline metric (`primary_metric`) is accuracy (token accuracy) or mIoU.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from ..data.metrics import confusion_matrix, mean_iou, topk_correct
from .distributed import DistInfo, all_reduce_sum


def primary_metric(task: str) -> str:
    return "miou" if task == "segmentation" else "accuracy"


def token_logits(logits: torch.Tensor, targets: torch.Tensor, task: str) -> tuple[torch.Tensor, torch.Tensor]:
    """For "language_modeling": logits (B, T, V) and targets (B, T) as (B·T, V) and (B·T,), one row per
    token, so cross-entropy, argmax(1) and top-k read them as classification; other tasks unchanged."""
    if task != "language_modeling":
        return logits, targets
    if logits.ndim != 3 or targets.shape != logits.shape[:2]:
        raise ValueError(f"language modelling needs logits (B, T, V) and targets (B, T), got "
                         f"{tuple(logits.shape)} and {tuple(targets.shape)}")
    return logits.reshape(-1, logits.shape[-1]), targets.reshape(-1)


def _topk(num_classes: int) -> tuple[int, ...]:
    return (1, 5) if num_classes >= 5 else (1,)


@torch.no_grad()
def evaluate(model: nn.Module, loader: DataLoader, task: str, num_classes: int,
             device: torch.device | str | None = None, dist_info: DistInfo = DistInfo(),
             amp: bool = False) -> dict[str, float]:
    """Metrics of `model` in eval mode on `loader` (each rank passes its shard; sums are all-reduced).
    The model's train/eval mode is restored afterwards."""
    device = torch.device(device) if device is not None else next(model.parameters()).device
    was_training = model.training
    model.eval()
    topk = _topk(num_classes)
    sums = torch.zeros(2 + len(topk), dtype=torch.float64, device=device)     # loss, count, correct@k
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.float64, device=device)
    for x, y in loader:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=amp and device.type == "cuda"):
            logits = model(x)
        logits, y = token_logits(logits.float(), y, task)
        sums[0] += F.cross_entropy(logits, y, reduction="sum").double()
        sums[1] += y.numel()
        sums[2:] += topk_correct(logits, y, topk).double()
        if task == "segmentation":
            confusion += confusion_matrix(logits.argmax(1), y, num_classes).double()
    model.train(was_training)
    sums = all_reduce_sum(sums, dist_info).cpu()
    count = max(float(sums[1]), 1.0)
    out = {"loss": float(sums[0]) / count, "accuracy": float(sums[2]) / count}
    if len(topk) > 1:
        out["top5"] = float(sums[3]) / count
    if task == "segmentation":
        out["miou"] = mean_iou(all_reduce_sum(confusion, dist_info).cpu().long())
    if task == "language_modeling":
        out["perplexity"] = math.exp(min(out["loss"], 700.0))
    return out


@torch.no_grad()
def perplexity(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 500) -> dict[str, float]:
    """`evaluate` of a language model on token windows x (N, T) and next tokens y (N, T), in batches of
    `batch_size` on the model's device: {"loss", "accuracy" (token accuracy), "top5", "perplexity"}."""
    num_classes = model(x[:1].to(next(model.parameters()).device)).shape[-1]
    batches = list(zip(x.split(batch_size), y.split(batch_size)))
    return evaluate(model, batches, "language_modeling", num_classes)
