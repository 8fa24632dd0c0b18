"""Top-k accuracy and mIoU against brute-force per-sample / per-class computations."""
import pytest
import torch

from sparsefw.data import confusion_matrix, iou_per_class, mean_iou, topk_accuracy, topk_correct


def brute_topk(logits, targets, k):
    hits = 0
    for row, t in zip(logits.tolist(), targets.tolist()):
        order = sorted(range(len(row)), key=lambda c: -row[c])
        hits += t in order[:k]
    return hits


def test_topk_classification():
    g = torch.Generator().manual_seed(0)
    logits, targets = torch.randn(50, 7, generator=g), torch.randint(0, 7, (50,), generator=g)
    counts = topk_correct(logits, targets, (1, 3, 7))
    assert counts.tolist() == [brute_topk(logits, targets, k) for k in (1, 3, 7)]
    assert counts[-1] == 50
    torch.testing.assert_close(topk_accuracy(logits, targets, (1, 3)), counts[:2].double() / 50)


def test_topk_per_pixel():
    g = torch.Generator().manual_seed(1)
    logits, targets = torch.randn(2, 4, 3, 5, generator=g), torch.randint(0, 4, (2, 3, 5), generator=g)
    flat_logits = logits.permute(0, 2, 3, 1).reshape(-1, 4)
    assert topk_correct(logits, targets, (2,)).item() == brute_topk(flat_logits, targets.reshape(-1), 2)


def brute_miou(pred, target, num_classes):
    p, t = pred.reshape(-1).tolist(), target.reshape(-1).tolist()
    ious = []
    for c in range(num_classes):
        inter = sum(a == c and b == c for a, b in zip(p, t))
        union = sum(a == c or b == c for a, b in zip(p, t))
        if union:
            ious.append(inter / union)
    return sum(ious) / len(ious)


def test_miou_matches_brute_force_and_skips_absent_classes():
    g = torch.Generator().manual_seed(2)
    target = torch.randint(0, 4, (3, 6, 6), generator=g)
    pred = torch.where(torch.rand(3, 6, 6, generator=g) < 0.6, target, torch.randint(0, 4, (3, 6, 6), generator=g))
    conf = confusion_matrix(pred, target, num_classes=6)             # classes 4, 5 never occur
    assert conf.sum() == target.numel() and conf.trace() == (pred == target).sum()
    assert iou_per_class(conf)[4:].isnan().all()
    assert mean_iou(conf) == pytest.approx(brute_miou(pred, target, 6))
    halves = confusion_matrix(pred[:1], target[:1], 6) + confusion_matrix(pred[1:], target[1:], 6)
    assert torch.equal(halves, conf)                                  # counts accumulate over batches


def test_ignore_index_and_validation():
    target = torch.tensor([0, 1, 255, 1])
    pred = torch.tensor([0, 1, 0, 0])
    conf = confusion_matrix(pred, target, 2, ignore_index=255)
    assert conf.tolist() == [[1, 0], [1, 1]]
    assert mean_iou(conf) == pytest.approx((1 / 2 + 1 / 2) / 2)
    with pytest.raises(ValueError, match="class ids"):
        confusion_matrix(pred, target, 2)
    with pytest.raises(ValueError, match="topk"):
        topk_correct(torch.randn(3, 4), torch.zeros(3, dtype=torch.long), (5,))
    with pytest.raises(ValueError, match="num_classes"):
        confusion_matrix(pred, target, 0)
