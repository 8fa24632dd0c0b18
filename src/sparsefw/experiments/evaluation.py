"""Model evaluation as sums that add up over batches and ranks.

Classification: loss, top-1 accuracy ("accuracy") and top-5 accuracy ("top5", when there are at
least 5 classes). Segmentation: loss, pixel accuracy ("accuracy") and mean IoU ("miou") from the
summed confusion matrix. The headline metric (`primary_metric`) is accuracy or mIoU.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from ..data.metrics import confusion_matrix, mean_iou, topk_correct
from .distributed import DistInfo, all_reduce_sum


def primary_metric(task: str) -> str:
    return "miou" if task == "segmentation" else "accuracy"


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
        logits = logits.float()
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
    return out
