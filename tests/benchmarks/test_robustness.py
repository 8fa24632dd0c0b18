"""The across-tasks benchmark and the radius-rule study: their pieces against independent truths
(no accuracy claims)."""
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import _tasks as T  # noqa: E402
import bench_robustness as rr  # noqa: E402
import bench_robustness as br  # noqa: E402
from sparsefw import compress  # noqa: E402
from sparsefw.constraints import SpectralKSupportBall  # noqa: E402
from sparsefw.constraints.topk_svd import best_rank_k  # noqa: E402
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
    s = br.summary(recs)
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


def test_power_iteration_rank_k_converges_to_the_best_rank_k():
    """On matrices with a clear spectral gap, 10 QR power steps give [M]_k (Eckart–Young) to ~1e-6."""
    torch.manual_seed(0)
    U, _ = torch.linalg.qr(torch.randn(2, 8, 8, dtype=torch.float64))
    V, _ = torch.linalg.qr(torch.randn(2, 12, 8, dtype=torch.float64))
    sigma = torch.tensor([10.0, 8.0, 6.0, 1.0, 0.5, 0.3, 0.2, 0.1], dtype=torch.float64)
    M = U @ torch.diag_embed(sigma.expand(2, 8)) @ V.mT
    approx, size = rr.power_iteration_rank_k(M, 3)
    exact, exact_size = best_rank_k(M, 3)
    torch.testing.assert_close(approx, exact, atol=1e-6, rtol=0)
    torch.testing.assert_close(size, exact_size)


def test_spectral_lmo_switch_is_used_inside_and_restored_after():
    region = SpectralKSupportBall((6, 5), k=2, radius=1.0)
    d = torch.randn(6, 5)
    exact = region.lmo(d)
    calls = []
    original = rr.power_iteration_rank_k
    rr.power_iteration_rank_k = lambda M, k: calls.append(k) or original(M, k)
    try:
        with rr.spectral_lmo("power10"):
            inexact = region.lmo(d)
    finally:
        rr.power_iteration_rank_k = original
    assert calls == [2]
    assert float(torch.linalg.matrix_norm(inexact)) == pytest.approx(1.0, rel=1e-5)   # still a vertex
    torch.testing.assert_close(region.lmo(d), exact)                                     # exact again


def test_shrunken_stats_on_a_hand_set_net():
    net = nn.Sequential(nn.Conv2d(1, 4, 1, bias=False), nn.BatchNorm2d(4))
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([1.0, 0.05, 0.5, 0.01]).view(4, 1, 1, 1))
        net[1].weight.copy_(torch.tensor([2.0, 0.3, 1.0, 0.1]))
    got = rr.shrunken_stats(net)
    assert got["shrunken_share"] == 0.5
    assert got["gamma_shrunken"] == pytest.approx(0.2) and got["gamma_rest"] == pytest.approx(1.5)


def test_conv_bn_pairs_follow_the_library_cnn():
    model = build_model("cnn", 10, 1, seed=0, widths=[4, 4, 8, 8])
    pairs = T.conv_bn_pairs(model)
    assert [c.out_channels for c, _ in pairs] == [4, 4, 8, 8]
    assert all(bn.num_features == conv.out_channels for conv, bn in pairs)
