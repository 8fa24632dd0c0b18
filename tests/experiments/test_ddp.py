"""Data-parallel training under torchrun: two CPU processes (gloo) stay bitwise identical."""
import json
import os
import socket
import subprocess
import sys

import pytest
import torch
import yaml

from sparsefw.experiments.distributed import parameter_digest
from sparsefw.experiments.evaluation import evaluate
from sparsefw.experiments.sweep import load_trained
from tiny_setup import tiny


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_parameter_digest_sees_any_change():
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    before = parameter_digest(model)
    assert parameter_digest(model) == before
    with torch.no_grad():
        model[0].weight[1, 2] = torch.nextafter(model[0].weight[1, 2], torch.tensor(1.0))   # one ulp
    assert parameter_digest(model) != before
    changed = parameter_digest(model)
    model[1].running_mean += 1e-3                                                         # buffers count too
    assert parameter_digest(model) != changed


def test_two_process_sfw_run_keeps_ranks_identical(tmp_path):
    cfg = tiny(optimizer={"name": "sfw", "mode": "group_k_support", "k": 0.5},
               training={"check_rank_consistency": True})
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master-addr=127.0.0.1",
           f"--master-port={_free_port()}", "-m", "sparsefw.cli", "train", "--config", str(tmp_path / "cfg.yaml"),
           "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("epoch 2/2") == 1                                   # only rank 0 prints
    metrics = json.loads((out / "metrics.json").read_text())
    digests = metrics["rank_param_digests"]
    assert len(digests) == 2 and digests[0] == digests[1]
    # the all-reduced test metrics of the exact shards equal a single-process evaluation of the result
    model, _, loader, info = load_trained(out)
    assert parameter_digest(model) == digests[0]
    single = evaluate(model, loader, info.task, info.num_classes)
    assert metrics["epochs"][-1]["test_accuracy"] == single["accuracy"]
    assert metrics["epochs"][-1]["test_loss"] == pytest.approx(single["loss"], rel=1e-6)
