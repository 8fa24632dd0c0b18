"""Language modelling through the experiments layer: the loss and the evaluation over every token
(token accuracy, perplexity = exp(mean token cross-entropy)), and a 3-step `sparsefw train` of "gpt" on
"fortunes" (a small corpus written here, passed as data.data_dir)."""
import json
import math

import pytest
import torch
import torch.nn.functional as F
import yaml

from sparsefw.cli import main
from sparsefw.experiments.evaluation import evaluate, perplexity, token_logits
from sparsefw.models import build_model


def _corpus(folder):
    words = ["fox", "dog", "the", "quick", "lazy", "jumps", "over", "brown", "cat", "sleeps"]
    fortunes = [" ".join(words[(i * j) % 10] for j in range(1, 14)) + f"\n\t\t-- No. {i}" for i in range(60)]
    (folder / "fortunes").write_text("\n%\n".join(fortunes) + "\n%\n")
    return folder


def test_evaluate_and_perplexity_count_every_token():
    model = build_model("gpt", 11, 1, 8, dim=16, heads=2, mlp=32, seed=0)
    g = torch.Generator().manual_seed(0)
    x, y = torch.randint(0, 11, (7, 8), generator=g), torch.randint(0, 11, (7, 8), generator=g)
    with torch.no_grad():
        logits = model(x)
    loss = float(F.cross_entropy(logits.reshape(-1, 11), y.reshape(-1)))
    accuracy = float((logits.argmax(-1) == y).double().mean())
    out = perplexity(model, x, y, batch_size=3)
    assert out["loss"] == pytest.approx(loss, rel=1e-5) and out["perplexity"] == pytest.approx(math.exp(loss), rel=1e-5)
    assert out["accuracy"] == pytest.approx(accuracy) and 0 <= out["accuracy"] <= out["top5"] <= 1
    assert evaluate(model, [(x, y)], "language_modeling", 11) == pytest.approx(out)
    with pytest.raises(ValueError, match=r"language modelling needs logits \(B, T, V\) and targets \(B, T\)"):
        token_logits(logits, y[:, :4], "language_modeling")


def test_three_step_cli_training_of_gpt_on_fortunes(tmp_path):
    config = {"name": "lm", "data": {"name": "fortunes", "data_dir": str(_corpus(tmp_path)), "subset": [12, 4],
                                     "batch_size": 4, "eval_batch_size": 4},
              "model": {"name": "gpt", "dim": 16, "depth": 1, "heads": 2, "mlp": 32},
              "optimizer": {"name": "sfw", "mode": "k_support", "lr": 0.1, "momentum": 0.9, "rescale": "gradient"},
              "training": {"epochs": 1, "seed": 0, "progress": False}}
    (tmp_path / "lm.yaml").write_text(yaml.safe_dump(config))
    assert main(["train", "--config", str(tmp_path / "lm.yaml"), "--out", str(tmp_path / "run")]) == 0
    (row,) = json.loads((tmp_path / "run" / "metrics.json").read_text())["epochs"]
    assert row["test_perplexity"] == pytest.approx(math.exp(row["test_loss"]))
    assert 0 < row["test_accuracy"] <= 1 and math.isfinite(row["train_loss"]) and row["fw_gap_mean"] >= 0
