"""Segmentation end to end: m2nist with the "fcn" model through `sparsefw train`, `sweep` and `report`
(the CLI's main(), in process), checked against an independent mIoU of the trained model's predictions."""
import json

import numpy as np
import pytest
import torch
import yaml

from sparsefw import compress
from sparsefw.cli import main
from sparsefw.data import get_datasets
from sparsefw.data.metrics import confusion_matrix, mean_iou
from sparsefw.models import build_model

SEED = 5
CONFIG = {
    "name": "seg",
    "data": {"name": "m2nist", "subset": [32, 16], "batch_size": 8, "eval_batch_size": 16},
    "model": {"name": "fcn"},
    "schedule": {"name": "linear"},
    "training": {"epochs": 1, "seed": SEED, "device": "cpu", "progress": False},
    "sweep": {"unstructured": [0.5, 0.9], "filters": [0.25, 0.5], "lowrank": [0.5, 0.75]},
    "methods": {
        "sfw": {"optimizer": {"name": "sfw", "mode": "spectral_k_support", "k": 0.3, "width": 5.0, "lr": 0.03,
                                  "norm_radius": "init"}},   # 4 steps: biases in width · E‖b‖ balls predict >1 class
    },
}


def brute_force_miou(pred: np.ndarray, target: np.ndarray, num_classes: int) -> float:
    """Mean over classes present in target or prediction of |P∩T| / |P∪T|, class by class."""
    ious = []
    for c in range(num_classes):
        p, t = pred == c, target == c
        union = np.logical_or(p, t).sum()
        if union:
            ious.append(np.logical_and(p, t).sum() / union)
    return float(np.mean(ious))


@torch.no_grad()
def predictions(model, images: torch.Tensor) -> np.ndarray:
    return torch.cat([model(x).argmax(1) for x in images.split(8)]).numpy()


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    """Train every method of CONFIG, sweep each, report them; (tmp dir, {method: sweep rows})."""
    tmp = tmp_path_factory.mktemp("seg")
    (tmp / "seg.yaml").write_text(yaml.safe_dump(CONFIG))
    assert main(["train", "--config", str(tmp / "seg.yaml"), "--out", str(tmp / "runs")]) == 0
    for method in CONFIG["methods"]:
        assert main(["sweep", "--run", str(tmp / "runs" / method)]) == 0
    assert main(["report", str(tmp / "runs"), "--out", str(tmp / "report")]) == 0
    rows = {m: json.loads((tmp / "runs" / m / "sweep.json").read_text())["rows"] for m in CONFIG["methods"]}
    return tmp, rows


def trained_model(run_dir):
    """The trained FCN rebuilt from the checkpoint's weights (not through the sweep's loader)."""
    state = torch.load(run_dir / "checkpoint.pt", map_location="cpu", weights_only=True)
    model = build_model("fcn", 11, 1, 64, seed=SEED)
    model.load_state_dict(state["model"])
    return model.eval()


def test_files_written(pipeline):
    tmp, _ = pipeline
    for method in CONFIG["methods"]:
        run = tmp / "runs" / method
        for name in ("checkpoint.pt", "metrics.json", "metrics.csv", "config.yaml", "sweep.json", "sweep.csv",
                     "sweep.png"):
            assert (run / name).stat().st_size > 0, (method, name)
        epochs = json.loads((run / "metrics.json").read_text())["epochs"]
        assert [e["epoch"] for e in epochs] == [1] and 0 <= epochs[0]["test_miou"] <= 1
    for name in ("report.md", "report.csv", "report.json", "report.png"):
        assert (tmp / "report" / name).stat().st_size > 0, name
    table = (tmp / "report" / "report.md").read_text()
    assert "miou" in table and "| sfw |" in table


@pytest.mark.parametrize("method", list(CONFIG["methods"]))
def test_dense_miou_matches_independent_computation(pipeline, method):
    tmp, rows = pipeline
    _, test, info = get_datasets("m2nist", subset=tuple(CONFIG["data"]["subset"]))
    assert info.task == "segmentation" and info.num_classes == 11
    model = trained_model(tmp / "runs" / method)
    pred, target = predictions(model, test.images), test.targets.numpy()
    assert len(np.unique(pred)) >= 2          # not a constant prediction: the check below has substance
    truth = brute_force_miou(pred, target, 11)
    assert 0 < truth < 1
    library = mean_iou(confusion_matrix(torch.from_numpy(pred), torch.from_numpy(target).long(), 11))
    dense = next(r for r in rows[method] if r["kind"] == "dense")
    assert library == pytest.approx(truth, abs=1e-12)
    assert dense["miou"] == pytest.approx(truth, abs=1e-9)
    assert dense["accuracy"] == pytest.approx(float((pred == target).mean()), abs=1e-9)
    # the training loop's last evaluation is the same model on the same test set
    last_epoch = json.loads((tmp / "runs" / method / "metrics.json").read_text())["epochs"][-1]
    assert last_epoch["test_miou"] == pytest.approx(truth, abs=1e-9)


def test_compressed_rows_match_compressing_the_model_directly(pipeline):
    tmp, rows = pipeline
    _, test, _ = get_datasets("m2nist", subset=tuple(CONFIG["data"]["subset"]))
    model, target = trained_model(tmp / "runs" / "sfw"), test.targets.numpy()
    cases = {("filters", 0.5): compress.remove_filters(model, amount=0.5, example_inputs=test.images[:1]),
             ("lowrank", 0.5): compress.factorize(model, rank=0.5),
             ("unstructured", 0.9): compress.prune(model, sparsity=0.9)}
    for (kind, level), small in cases.items():
        row = next(r for r in rows["sfw"] if r["kind"] == kind and r["level"] == level)
        assert row["miou"] == pytest.approx(brute_force_miou(predictions(small.eval(), test.images), target, 11),
                                            abs=1e-9), (kind, level)
        assert row["params"] == compress.count_parameters(small)


@pytest.mark.parametrize("method", list(CONFIG["methods"]))
def test_size_falls_with_compression_level(pipeline, method):
    _, rows = pipeline
    dense = next(r for r in rows[method] if r["kind"] == "dense")
    assert dense["params"] == sum(p.numel() for p in build_model("fcn", 11, 1, 64).parameters())
    for kind, size_key in (("filters", "params"), ("lowrank", "params"), ("unstructured", "nonzero_params")):
        sizes = [r[size_key] for r in sorted((r for r in rows[method] if r["kind"] == kind), key=lambda r: r["level"])]
        assert len(sizes) == len(CONFIG["sweep"][kind])
        assert all(a > b for a, b in zip([dense[size_key]] + sizes, sizes)), (kind, sizes)
    pruned = [r for r in rows[method] if r["kind"] == "unstructured"]
    assert all(r["params"] == dense["params"] for r in pruned)      # pruning zeroes, it stores as many
