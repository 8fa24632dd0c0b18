"""The cost benchmark's functions on tiny shapes (no timing assertions): the methods it times do
what their names say (checked against float64 SVDs), its helpers are right, and a --quick run
writes its two sections and its plot."""
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import bench_cost  # noqa: E402
from _harness import interleaved  # noqa: E402
from bench_cost import LAM, LAYER_METHODS, LR, METHODS, ConvBank, Trainer, resnet50_conv_shapes  # noqa: E402

SHAPES = [(6, 3, 3, 3), (5, 2, 1, 1)]  # a wide (6×27) and a tall (5×2) matrix


def _trainer_after_one_step(name):
    trainer = Trainer(METHODS[name], ConvBank(SHAPES, seed=3))
    trainer.set_gradients(seed=1, scale=0.5)
    before = [p.detach().double().clone() for p in trainer.model.parameters()]
    grads = [p.grad.double().clone() for p in trainer.model.parameters()]
    trainer.optimizer_step()
    return trainer, before, grads


def _svd(w):
    return np.linalg.svd(w.reshape(w.shape[0], -1).numpy(), full_matrices=False)


@pytest.mark.parametrize("name", ["SGD + nuclear penalty"])
def test_penalty_step_is_sgd_on_loss_plus_nuclear_subgradient(name):
    trainer, before, grads = _trainer_after_one_step(name)
    for p, w, g in zip(trainer.model.parameters(), before, grads):
        u, _, vh = _svd(w)
        expected = w.numpy() - LR * (g.numpy() + LAM * (u @ vh).reshape(w.shape))  # first step: m = g
        np.testing.assert_allclose(p.detach().double().numpy(), expected, rtol=0, atol=1e-6)


def test_prox_step_is_singular_value_soft_thresholding_after_sgd():
    trainer, before, grads = _trainer_after_one_step("prox-SGD (SVT)")
    for p, w, g in zip(trainer.model.parameters(), before, grads):
        u, s, vh = _svd(w - LR * g)
        expected = (u * np.maximum(s - LR * LAM, 0)) @ vh
        np.testing.assert_allclose(p.detach().double().numpy().reshape(expected.shape), expected, atol=1e-6)


@pytest.mark.parametrize("name", [n for n in LAYER_METHODS if n.startswith("SFW")])
def test_sfw_trainers_stay_feasible_and_own_work_is_their_lmos(name):
    trainer, before, _ = _trainer_after_one_step(name)
    groups = trainer.optimizer.param_groups
    assert all(g["constraint"] is not None for g in groups)
    for g in groups:
        assert float(g["constraint"].norm(g["params"][0].detach())) <= g["constraint"].radius * (1 + 1e-5)
    assert any(not torch.equal(p.detach().double(), w) for p, w in zip(trainer.model.parameters(), before))
    vertices = trainer.own_work()()
    for g, v in zip(groups, vertices):
        buffer = trainer.optimizer.state[g["params"][0]]["momentum_buffer"]
        torch.testing.assert_close(v, g["constraint"].lmo(buffer))


def test_sgd_has_no_own_work_and_steps_like_sgd():
    trainer, before, grads = _trainer_after_one_step("SGD")
    assert trainer.own_work() is None
    for p, w, g in zip(trainer.model.parameters(), before, grads):
        torch.testing.assert_close(p.detach().double(), w - LR * g)


@pytest.mark.parametrize("shape", [(16, 4, 3, 3), (40, 8, 1, 1)])  # Gram-eigh path, wide and tall
def test_spectral_lmo_error_is_at_float32_level(shape):
    for spectrum in ("gaussian", "1/√i"):
        direction, norm_excess, distance = bench_cost.spectral_lmo_error(shape, 0.3, spectrum)
        assert -1e-6 <= direction <= 1e-5  # no rank-k unit matrix beats the exact vertex
        assert abs(norm_excess) <= 1e-4 and 0 <= distance <= 1e-3


def test_spectral_lmo_error_detects_a_wrong_vertex(monkeypatch):
    from sparsefw.constraints import SpectralKSupportBall
    monkeypatch.setattr(SpectralKSupportBall, "lmo", lambda self, d: -self.radius * d / torch.linalg.vector_norm(d))
    direction, norm_excess, distance = bench_cost.spectral_lmo_error((16, 4, 3, 3), 0.3, "1/√i")
    # the L2 ball's vertex: right norm, full rank, so it "beats" ‖Σ_k‖ — a large negative shortfall
    assert direction < -1e-2 and distance > 1e-2 and abs(norm_excess) < 1e-6


def test_interleaved_call_counts():
    calls = {"a": 0, "b": 0}

    def bump(key):
        calls[key] += 1

    fns = {"a": lambda: bump("a"), "b": lambda: bump("b")}
    samples = interleaved(fns, repeats=3, min_sample_s=0.0)  # warm-up long enough: 1 + 3 rounds × 1
    assert calls == {"a": 4, "b": 4}
    assert set(samples) == {"a", "b"} and all(len(v) == 3 and min(v) >= 0 for v in samples.values())
    calls.update(a=0, b=0)
    interleaved(fns, repeats=3, min_sample_s=60.0, max_inner=4)  # warm-up, calibration, 3 rounds × 4
    assert calls == {"a": 14, "b": 14}
    with pytest.raises(ValueError, match="repeats"):
        interleaved({"a": lambda: None}, repeats=0)


def test_resnet50_shapes_match_torchvision_counts():
    shapes = resnet50_conv_shapes()
    assert len(shapes) == 53
    assert sum(math.prod(s) for s in shapes) == 23_454_912  # torchvision: 25,557,032 − BN 53,120 − fc 2,049,000
    assert max((s[0], s[1] * s[2] * s[3]) for s in shapes if s[2] == 3) == (512, 4608)


def test_quick_run_writes_two_sections_and_a_png(tmp_path):
    out, results = tmp_path / "BENCHMARKS.md", tmp_path / "results"
    res = bench_cost.main(["cost", "--quick", "--threads", "1", "--out", str(out), "--results-dir", str(results)]).measured
    text = out.read_text()
    for section in ("cost", "cost_scaling"):
        assert f"<!-- {section}:start -->" in text and f"<!-- {section}:end -->" in text
    assert "python benchmarks/bench_cost.py cost --quick" in text
    assert (results / "cost_scaling.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for per_shape in list(res["layers"].values()) + list(res["models"].values()):
        assert set(per_shape) == set(LAYER_METHODS)
        assert all(math.isfinite(r["step"]) and r["step"] > 0 for r in per_shape.values())
