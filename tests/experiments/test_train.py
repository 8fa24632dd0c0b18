"""The training loop: exact resume, metrics files, checkpoints that load with weights_only=True."""
import json

import pytest
import torch

from sparsefw.constraints import constraint_from_spec
from sparsefw.experiments.checkpoint import load_checkpoint, save_checkpoint
from sparsefw.experiments.config import ConfigError, validate
from sparsefw.experiments.evaluation import evaluate
from sparsefw.experiments.sweep import load_trained
from sparsefw.experiments.train import train

from tiny_setup import tiny

WALL_TIMES = {"epoch_time"}


def _strip_times(rows):
    return [{k: v for k, v in r.items() if k not in WALL_TIMES} for r in rows]


@pytest.mark.parametrize("optimizer", [
    {"name": "sfw", "mode": "spectral_k_support", "k": 0.5},     # SFW state (momentum) + top-k SVD LMO
    {"name": "sgd", "weight_decay": 5e-4, "penalty": "prox_svd", "penalty_lambda": 1e-3},
])
def test_resume_is_bitwise_identical_to_straight_training(tmp_path, optimizer):
    cfg = validate(tiny(optimizer=optimizer, data={"augment": True}))   # augmentation RNG is per epoch too
    straight = train(cfg, tmp_path / "straight")
    first = train(cfg, tmp_path / "resumed", stop_after_epochs=1)
    assert len(first) == 1
    resumed = train(cfg, tmp_path / "resumed", resume=True)
    assert _strip_times(resumed) == _strip_times(straight)
    a = load_checkpoint(tmp_path / "straight")
    b = load_checkpoint(tmp_path / "resumed")
    assert a["epoch"] == b["epoch"] == 2
    for name, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][name]), name
    assert b["scheduler"]["last_epoch"] == a["scheduler"]["last_epoch"] == 2 * len(range(0, 256, 64))
    # the optimizer state survived the round trip (momentum buffers equal bitwise)
    for key, state in a["optimizer"]["state"].items():
        for name, value in state.items():
            assert torch.equal(value, b["optimizer"]["state"][key][name])


def test_metrics_files_and_checkpoint_contents(tiny_run):
    run, history = tiny_run
    files = {p.name for p in run.iterdir()}
    assert {"checkpoint.pt", "metrics.json", "metrics.csv", "config.yaml"} <= files
    assert not [f for f in files if f.startswith(".")]                       # no leftover temp files
    data = json.loads((run / "metrics.json").read_text())
    assert data["epochs"] == history and [r["epoch"] for r in history] == [1, 2]
    csv_lines = (run / "metrics.csv").read_text().splitlines()
    assert len(csv_lines) == 3 and "fw_gap_mean" in csv_lines[0]
    for row in history:
        assert row["fw_gap_max"] >= row["fw_gap_mean"] >= 0                  # FW gaps are ≥ 0
        assert 0 <= row["test_accuracy"] <= row["test_top5"] <= 1
    assert history[0]["lr"] == pytest.approx(0.1 / 2)                        # first step of a 2-step warm-up
    # the last test metrics are what the saved model scores
    model, cfg, loader, info = load_trained(run)
    again = evaluate(model, loader, info.task, info.num_classes)
    assert again["accuracy"] == history[-1]["test_accuracy"]
    assert again["loss"] == pytest.approx(history[-1]["test_loss"], rel=1e-6)
    state = load_checkpoint(run)                                             # weights_only=True inside
    assert state["config"]["optimizer"]["mode"] == "k_support" and state["epoch"] == 2
    assert state["optimizer"]["param_groups"][0]["lr"] == pytest.approx(0.0, abs=1e-12)   # cosine ends at 0


def test_sfw_weights_stay_in_their_regions(tiny_run):
    state = load_checkpoint(tiny_run[0])
    groups = state["optimizer"]["param_groups"]
    buffers = [k for k in state["model"] if k.endswith(("running_mean", "running_var", "num_batches_tracked"))]
    assert len(groups) == len(state["model"]) - len(buffers)                 # every parameter has a region
    for group in groups:
        region = constraint_from_spec(group["constraint"])
        weight = state["model"][group["name"]]
        assert float(region.norm(weight)) <= region.radius * (1 + 1e-5), group["name"]


@pytest.mark.parametrize("optimizer", [{"name": "sgd"}, {"name": "sfw", "k": 0.3, "width": 5.0}])
def test_training_learns(tmp_path, optimizer):
    """256 digits, 2 epochs of an MLP: far above chance (0.1) with either optimizer."""
    cfg = validate(tiny(optimizer=optimizer, model={"name": "mlp", "widths": None}, data={"batch_size": 32}))
    history = train(cfg, tmp_path / "run")
    assert history[-1]["test_accuracy"] > 0.5
    assert history[-1]["train_loss"] < history[0]["train_loss"]


def test_existing_run_is_not_overwritten(tmp_path, tiny_config):
    train(tiny_config, tmp_path / "run", stop_after_epochs=1)
    before = (tmp_path / "run" / "checkpoint.pt").read_bytes()
    with pytest.raises(ConfigError, match="--resume"):
        train(tiny_config, tmp_path / "run")
    assert (tmp_path / "run" / "checkpoint.pt").read_bytes() == before
    other = validate(tiny(optimizer={"lr": 0.2}))
    with pytest.raises(ConfigError, match="optimizer.lr"):
        train(other, tmp_path / "run", resume=True)


def test_resume_accepts_a_checkpoint_that_wrote_an_unset_model_option_as_null(tmp_path):
    """Older runs saved `model: {name: mlp, widths: null}`; an option absent now is the same config."""
    cfg = validate(tiny(model={"name": "mlp", "widths": None}))
    train(cfg, tmp_path / "run", stop_after_epochs=1)
    state = load_checkpoint(tmp_path / "run")
    older = {**state["config"], "model": {"name": "mlp", "widths": None}}
    save_checkpoint(tmp_path / "run", {**state, "config": older})
    assert len(train(cfg, tmp_path / "run", resume=True)) == 2
    with pytest.raises(ConfigError, match=r"differs from the checkpoint's at model\.hidden$"):
        train(validate(tiny(model={"name": "mlp", "widths": None, "hidden": [8]})), tmp_path / "run", resume=True)


def test_coupled_mode_trains_from_a_config_and_stays_feasible(tmp_path):
    """mode coupled_group_k_support gets its example input from the data: the checkpoint holds
    multi-parameter groups ("a+b" names) whose packed members lie in their regions."""
    cfg = validate(tiny(optimizer={"name": "sfw", "mode": "coupled_group_k_support", "k": 0.5, "width": 5.0},
                        training={"epochs": 1}))
    train(cfg, tmp_path / "run")
    state = load_checkpoint(tmp_path / "run" / "checkpoint.pt")
    joint = [g for g in state["optimizer"]["param_groups"] if "+" in g["name"]]
    assert joint, "no coupled region was built"
    for group in joint:
        region = constraint_from_spec(group["constraint"])
        packed = region.pack([state["model"][n] for n in group["name"].split("+")])
        assert float(region.norm(packed)) <= region.radius * (1 + 1e-5), group["name"]
