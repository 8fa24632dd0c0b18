"""Compression sweeps and reports on a tiny trained CNN, checked against independent computations:
the dense row against `evaluate`, the compressed rows against torch.nn.utils.prune masks."""
import copy
import dataclasses
import json

import pytest
import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

from sparsefw.experiments.evaluation import evaluate
from sparsefw.experiments.report import find_sweeps, markdown_table, write_report
from sparsefw.compress import recalibrate_batchnorm, remove_filters
from sparsefw.experiments.sweep import (calibration_batches, compress_model, load_trained, run_sweep,
                                       write_sweep)


@pytest.fixture(scope="module")
def swept(tiny_run):
    model, cfg, loader, info = load_trained(tiny_run[0])
    rows = run_sweep(model, loader, info.task, info.num_classes, cfg.sweep, "tiny")
    return model, loader, info, cfg, rows


def _accuracy(model, loader, info):
    return evaluate(model, loader, info.task, info.num_classes)["accuracy"]


def _masked_copy(model, mask_fn):
    masked = copy.deepcopy(model)
    mask_fn(masked)
    return masked.eval()


def test_rows_cover_every_level_and_dense_matches_evaluate(swept):
    model, loader, info, cfg, rows = swept
    assert [(r["kind"], r["level"]) for r in rows] == [("dense", 0.0)] + [
        (k, lvl) for k in ("unstructured", "filters", "lowrank") for lvl in getattr(cfg.sweep, k)]
    dense = rows[0]
    assert dense["accuracy"] == _accuracy(model, loader, info)
    assert dense["params_ratio"] == dense["flops_ratio"] == 1.0
    assert dense["params"] == sum(p.numel() for p in model.parameters())
    for r in rows:
        assert r["relative_drop"] == pytest.approx((dense["accuracy"] - r["accuracy"]) / dense["accuracy"])
        assert 0 <= r["accuracy"] <= r["top5"] <= 1
    for r in rows:
        if r["kind"] == "lowrank":
            assert r["rank_kept"] == pytest.approx(1 - r["level"])


def test_sizes_shrink_with_the_level(swept):
    *_, rows = swept
    dense = rows[0]
    for kind, size in (("unstructured", "nonzero_params"), ("filters", "params"), ("lowrank", "params")):
        sizes = [dense[size]] + [r[size] for r in rows if r["kind"] == kind]
        assert all(a > b for a, b in zip(sizes, sizes[1:])), (kind, sizes)
    for r in rows:
        if r["kind"] == "unstructured":            # zeros stay in the tensors: same storage, same dense FLOPs
            assert r["params"] == dense["params"] and r["flops"] == dense["flops"]
        elif r["kind"] != "dense":
            assert r["flops"] < dense["flops"]


def test_compressed_accuracy_equals_torch_masked_models(swept):
    """Unstructured rows = global L1 masking of conv/linear weights; filter rows = ln_structured per conv."""
    model, loader, info, cfg, rows = swept
    compared = 0
    for r in rows:
        if r["kind"] == "unstructured":
            def mask(m, s=r["level"]):
                params = [(mod, "weight") for mod in m.modules() if isinstance(mod, (nn.Conv2d, nn.Linear))]
                torch_prune.global_unstructured(params, torch_prune.L1Unstructured, amount=s)
        elif r["kind"] == "filters":
            def mask(m, s=r["level"]):
                for mod in m.modules():
                    if isinstance(mod, nn.Conv2d):
                        torch_prune.ln_structured(mod, "weight", amount=s, n=1, dim=0)
        else:
            continue
        masked = _masked_copy(model, mask)
        assert abs(_accuracy(masked, loader, info) - r["accuracy"]) <= 1 / len(loader.dataset), r
        compared += 1
    assert compared == len(cfg.sweep.unstructured) + len(cfg.sweep.filters)


def test_write_sweep_files(swept, tmp_path):
    *_, rows = swept
    files = write_sweep(rows, tmp_path, "accuracy")
    assert json.loads(files["json"].read_text())["rows"] == rows
    lines = files["csv"].read_text().splitlines()
    assert len(lines) == len(rows) + 1 and lines[0].startswith("run,kind,level")
    assert files["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert find_sweeps([tmp_path]) == [tmp_path / "sweep.json"]
    with pytest.raises(FileNotFoundError, match="sweep"):
        find_sweeps([tmp_path / "nothing_here"])


def test_report_merges_runs_into_one_table(swept, tmp_path):
    *_, rows = swept
    other = [{**r, "run": "other", "accuracy": r["accuracy"] / 2} for r in rows if r["kind"] != "lowrank"]
    write_sweep(rows, tmp_path / "a", "accuracy")
    write_sweep(other, tmp_path / "b", "accuracy")
    table, files = write_report([tmp_path / "a", tmp_path / "b"], tmp_path / "report")
    lines = table.splitlines()
    assert lines[0] == ("| run (accuracy) | dense | 50% sparse | 90% sparse | 25% filters removed | "
                        "50% filters removed | 50% rank removed | 75% rank removed |")
    assert lines[2] == "| tiny | " + " | ".join(f"{r['accuracy']:.3f}" for r in rows) + " |"
    assert lines[3].startswith(f"| other | {rows[0]['accuracy'] / 2:.3f} |") and lines[3].endswith("| – | – |")
    assert files["md"].read_text().count("| tiny |") == 1
    assert markdown_table(rows, "top5").splitlines()[2].startswith(f"| tiny | {rows[0]['top5']:.3f}")


def test_conv_only_lowrank_keeps_the_classifier(swept):
    """sweep.lowrank_layers: conv (the default) factorizes the convs only (what the low-rank mode
    trains low-rank, the paper code's protocol): fewer parameters saved than with "all" by exactly
    the classifier's factorization."""
    model, loader, info, cfg, rows = swept
    assert cfg.sweep.lowrank_layers == "conv"
    both = dataclasses.replace(cfg.sweep, unstructured=[], filters=[], lowrank=[0.75], lowrank_layers="all")
    row = run_sweep(model, loader, info.task, info.num_classes, both, "tiny")[1]
    fc = model.classifier
    m, n = fc.out_features, fc.in_features
    r = max(1, int(0.25 * min(m, n)))
    saved_by_fc = m * n - r * (m + n) if r * (m + n) < m * n else 0
    conv_only = next(x for x in rows if x["kind"] == "lowrank" and x["level"] == 0.75)
    assert conv_only["params"] - row["params"] == saved_by_fc > 0


def test_bn_recalibration_evaluates_the_recalibrated_models(swept):
    """sweep.bn_recalibration: B — every compressed row is the accuracy of the compressed model
    after recalibrate_batchnorm on the same B training batches; the dense row is untouched."""
    model, loader, info, cfg, rows = swept
    recal = dataclasses.replace(cfg.sweep, unstructured=[0.9], filters=[0.5], lowrank=[], bn_recalibration=2)
    with pytest.raises(ValueError, match="calibration batches"):
        run_sweep(model, loader, info.task, info.num_classes, recal, "tiny")
    batches = calibration_batches(cfg, 2)
    assert len(batches) == 2 and batches[0][0].shape[0] == cfg.data.batch_size
    assert all(torch.equal(a[0], b[0]) for a, b in zip(batches, calibration_batches(cfg, 2)))   # seeded
    got = run_sweep(model, loader, info.task, info.num_classes, recal, "tiny", calibration=batches)
    assert got[0]["accuracy"] == rows[0]["accuracy"] and "bn_recalibration" not in got[0]
    example = next(iter(loader))[0][:1]
    for row in got[1:]:
        assert row["bn_recalibration"] == 2
        small = recalibrate_batchnorm(compress_model(model, row["kind"], row["level"], example), batches)
        assert row["accuracy"] == _accuracy(small, loader, info)


def test_channels_rows_are_coupled_removal_beside_the_per_layer_filters(swept, tmp_path):
    """sweep.channels: each row is the accuracy of remove_filters(coupled=True) at that level, made
    here directly from one test image (batch 1, BN in eval mode); its stored parameters are those of
    the CNN rebuilt at the kept widths w − ⌊level·w⌋ (every conv's channels are a coupled space, the
    classifier's outputs are not). One sweep shows both kinds, filters before channels."""
    model, loader, info, cfg, rows = swept
    both = dataclasses.replace(cfg.sweep, unstructured=[], filters=[0.5], channels=[0.3, 0.5], lowrank=[])
    got = run_sweep(model, loader, info.task, info.num_classes, both, "tiny")
    assert [(r["kind"], r["level"]) for r in got] == [("dense", 0.0), ("filters", 0.5), ("channels", 0.3),
                                                      ("channels", 0.5)]
    example = next(iter(loader))[0][:1]
    widths = [conv.out_channels for conv in model.modules() if isinstance(conv, nn.Conv2d)]
    in_channels = next(m for m in model.modules() if isinstance(m, nn.Conv2d)).in_channels
    classes = model.classifier.out_features
    for row in got[2:]:
        direct = remove_filters(model, row["level"], example, coupled=True).eval()
        assert row["accuracy"] == _accuracy(direct, loader, info)
        kept = [w - int(row["level"] * w) for w in widths]
        convs = sum(9 * c_in * c_out + 2 * c_out for c_in, c_out in zip([in_channels] + kept[:-1], kept))
        assert row["params"] == convs + kept[-1] * classes + classes < got[0]["params"]
        assert row["flops"] < got[0]["flops"]
    table = markdown_table(got, "accuracy").splitlines()[0]
    assert table == "| run (accuracy) | dense | 50% filters removed | 30% channels removed | 50% channels removed |"
    files = write_sweep(got, tmp_path, "accuracy")                        # a panel per kind, titled
    assert files["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_latency_times_dense_and_the_asked_kinds_together(swept, monkeypatch):
    """sweep.latency: [channels] — one interleaved measurement of the dense model and the channels
    models on the first test batch; those rows carry its medians, speedup = dense / own, and how it
    was measured; rows of other kinds carry no latency and none of their models is timed."""
    from sparsefw import compress
    from sparsefw.experiments import sweep
    model, loader, info, cfg, _ = swept
    calls = []

    def fake(models, inputs, warmup=3, repeats=20):
        calls.append((models, inputs, repeats))
        return [10.0 / (i + 1) for i in range(len(models))]     # dense 10 ms, then 5, 3.33 ms

    monkeypatch.setattr(compress, "measure_latency", fake)
    timed = dataclasses.replace(cfg.sweep, unstructured=[0.5], filters=[0.5], channels=[0.3, 0.5], lowrank=[],
                                latency=["channels"])
    got = run_sweep(model, loader, info.task, info.num_classes, timed, "tiny")
    [(models, inputs, repeats)] = calls
    assert models[0] is model and len(models) == 3 and repeats == sweep.LATENCY_ROUNDS
    assert torch.equal(inputs, next(iter(loader))[0])                      # the first test batch
    assert [sum(p.numel() for p in m.parameters()) for m in models] == [r["params"] for r in got if "latency_ms" in r]
    assert [(r["kind"], r["level"], r["latency_ms"], r["speedup"]) for r in got if "latency_ms" in r] == [
        ("dense", 0.0, 10.0, 1.0), ("channels", 0.3, 5.0, 2.0), ("channels", 0.5, 10 / 3, 3.0)]
    assert all(r["latency_batch"] == len(inputs) and r["latency_threads"] == torch.get_num_threads()
               and r["latency_rounds"] == repeats for r in got if "latency_ms" in r)
    assert not any("latency_ms" in r for r in got if r["kind"] in ("unstructured", "filters"))
    every = run_sweep(model, loader, info.task, info.num_classes,
                      dataclasses.replace(timed, channels=[], latency=True), "tiny")
    assert all("latency_ms" in r for r in every) and len(calls[1][0]) == 3     # true: every kind
