"""The segmentation benchmark: its loss against a hand computation, its goal lines from known records,
and a run on a tiny budget whose records, costs and report are what the library computes."""
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import _tasks as T  # noqa: E402
import bench_segmentation as bs  # noqa: E402
from _harness import read_jsonl  # noqa: E402
from sparsefw import compress  # noqa: E402
from sparsefw.compress.metrics import count_nonzero_parameters  # noqa: E402


def test_ce_dice_is_cross_entropy_plus_one_minus_mean_class_dice():
    logits = torch.tensor([[[[2.0, 0.0]], [[0.0, 1.0]], [[-1.0, -1.0]]]])      # (1, 3 classes, 1, 2)
    target = torch.tensor([[[0, 0]]])
    p = logits.softmax(1)[0, :, 0]                                                # (3, 2 pixels)
    dice = [(2 * p[0].sum() + 1) / (p[0].sum() + 2 + 1),                          # class 0: both pixels
            (0 + 1) / (p[1].sum() + 0 + 1), (0 + 1) / (p[2].sum() + 0 + 1)]       # classes 1, 2: absent
    expected = F.cross_entropy(logits, target) + 1 - sum(dice) / 3
    torch.testing.assert_close(T.ce_dice(logits, target), expected)
    perfect = torch.tensor([[[[50.0, 50.0]], [[0.0, 0.0]], [[0.0, 0.0]]]])
    assert float(T.ce_dice(perfect, target)) < 1e-6


def _rec(net, method, seed, dense, kept, latency=0.5):
    scores = {"dense": dense, **{c: dense * kept for _, _, c in bs.LEVELS}}
    costs = {"dense": {"latency_ms": 10.0}, **{c: {"params": 0.5, "flops": 0.5, "latency": latency}
                                               for _, _, c in bs.LEVELS}}
    return {"task": net, "method": method, "seed": seed, "scores": scores, "costs": costs, "seconds": 1.0}


def test_goal_lines_compare_with_the_best_baseline_and_sgd():
    recs = [_rec("n", "sgd_wd", s, 0.80, 0.40) for s in (0, 1)] + [_rec("n", "adam", 0, 0.835, 0.9)]
    recs += [_rec("n", "coupled_group_k_support", s, d, k, 0.8) for s, d, k in ((0, 0.83, 0.96), (1, 0.81, 0.98))]
    s = bs.summary(recs)
    assert s["n", "coupled_group_k_support"]["50% coupled"] == pytest.approx((0.97, 0.01))
    (line,) = bs.goal_lines(s, recs)          # latency: the median over all 5 runs of the net (0.5)
    assert ("50% coupled (coupled_group_k_support): dense 0.820, +1.5 points below adam (met), kept 0.97 ≥ 0.95 "
            "(met), latency ×2.00 faster, 2.4× SGD's 0.40 (met)") in line
    assert "90% unstr.: not run" in line


def test_tiny_run_records_the_library_compression_and_reports(tmp_path, monkeypatch):
    monkeypatch.setattr(bs, "NETS", {"U-Net 2-3-4": ("unet", (2, 3, 4))})
    budget = {"canvases": 32, "test": 8, "epochs": 2, "batch_size": 8}
    jsonl = tmp_path / "runs.jsonl"
    bs.run(jsonl, (0, 1), seeds=(0,), budget=budget, methods=("sgd_wd", "coupled_group_k_support"))
    records = read_jsonl(jsonl)
    assert [(r["method"], r["budget"]) for r in records] == [("sgd_wd", budget), ("coupled_group_k_support", budget)]
    (task,) = bs.tasks(budget)
    assert task.train[0].shape == (32, 1, 64, 64) and task.test[1].shape == (8, 64, 64)
    model, _ = T.train(task, "coupled_group_k_support", 0)
    assert records[1]["scores"]["dense"] == pytest.approx(T.score(task, model))
    half = compress.remove_filters(model, 0.5, task.test[0][:2], coupled=True)
    assert records[1]["scores"]["50% coupled"] == pytest.approx(T.score(task, half.eval()))
    cost = records[1]["costs"]
    assert cost["50% coupled"]["params"] == pytest.approx(compress.count_parameters(half)
                                                          / compress.count_parameters(model))
    pruned = compress.prune(model, sparsity=0.9)
    assert cost["90% unstr."]["params"] == pytest.approx(count_nonzero_parameters(pruned)
                                                         / compress.count_parameters(model))
    x = task.test[0][:bs.LATENCY_BATCH]
    per_layer = compress.remove_filters(model, 0.5, task.test[0][:2])
    assert cost["50% filters"]["flops"] == pytest.approx(compress.count_flops(per_layer, x)
                                                         / compress.count_flops(model, x))
    text = bs.report(jsonl, tmp_path / "seg.png", command="--quick")
    assert records[1]["costs"]["dense"]["latency_ms"] > 0
    assert "| U-Net 2-3-4 | coupled_group_k_support | 1 |" in text and "32 train canvases, 2 epochs" in text
    assert (tmp_path / "seg.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
