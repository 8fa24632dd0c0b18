"""The across-tasks benchmark: its pieces against independent truths
(no accuracy claims)."""
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import _tasks as T  # noqa: E402
import bench_robustness as br  # noqa: E402
from sparsefw import compress  # noqa: E402
from sparsefw.models import build_model  # noqa: E402


def _tiny_task(model: str = "cnn") -> T.Task:
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(64, 1, 8, 8, generator=g), torch.randint(0, 3, (64,), generator=g)
    build = (lambda: build_model("cnn", 3, 1, widths=[4, 4, 8, 8])) if model == "cnn" else \
        (lambda: build_model("mlp", 3, 1, image_size=8))
    return T.Task("tiny", build, (x[:48], y[:48]), (x[48:], y[48:]), 3, epochs=1, batch_size=16)


def test_sweep_is_the_library_compression_scored_independently():
    task = _tiny_task()
    model, _ = T.train(task, "k_support", seed=0)
    got = T.sweep(task, model)
    x, y = task.test
    acc = lambda net: float((net(x).argmax(1) == y).double().mean())  # noqa: E731
    assert got["dense"] == pytest.approx(acc(model))
    assert got["90% unstr."] == pytest.approx(acc(compress.prune(model, sparsity=0.9).eval()))
    assert got["50% filters"] == pytest.approx(acc(compress.remove_filters(model, 0.5, x[:1]).eval()))
    assert got["25% rank kept"] == pytest.approx(acc(compress.factorize(model, rank=0.25, layers="conv").eval()))
    mlp = T.sweep(_tiny_task("mlp"), T.train(_tiny_task("mlp"), "sgd_wd", seed=0)[0])
    assert mlp["50% filters"] is None and mlp["50% rank kept"] is None and mlp["90% unstr."] is not None


def test_training_is_deterministic_per_seed():
    task = _tiny_task()
    a, _ = T.train(task, "group_k_support", seed=3)
    b, _ = T.train(task, "group_k_support", seed=3)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


def _rec(task, method, seed, dense, **cols):
    scores = {"dense": dense, **{c: None for _, _, c in T.LEVELS}}
    scores.update({k.replace("_", " "): v for k, v in cols.items()})
    return {"task": task, "method": method, "seed": seed, "scores": scores}


def test_summary_and_goals_from_known_records():
    recs = [_rec("t", "sgd_wd", s, 0.9, **{"90% unstr.": 0.3}) for s in (0, 1)]
    recs += [_rec("t", "k_support", 0, 0.88, **{"90% unstr.": 0.88}), _rec("t", "k_support", 1, 0.88, **{"90% unstr.": 0.792})]
    s = T.summary(recs, br.METHODS)
    assert s["t", "sgd_wd"]["90% unstr."] == pytest.approx((1 / 3, 0.0))
    assert s["t", "k_support"]["90% unstr."] == pytest.approx((0.95, 0.05))
    assert s["t", "k_support"]["dense"] == pytest.approx((0.88, 0.0))
    (line,) = br.goal_lines(s)
    assert "90% unstr. (k_support): dense NOT within 1.5 points (+2.0), kept 0.95 ≥ 0.95 (met), 2.9× SGD's 0.33 (met)" in line
    assert "50% filters: not run" in line


def test_bars_task_is_deterministic_with_balanced_labels():
    x, y = br.bars(400, 0)
    x2, y2 = br.bars(400, 0)
    assert x.shape == (400, 3, 12, 20) and torch.equal(x, x2) and torch.equal(y, y2)
    assert set(y.tolist()) == {0, 1, 2, 3} and min(torch.bincount(y)) > 60
