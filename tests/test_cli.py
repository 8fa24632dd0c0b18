"""The `sparsefw` command line: config errors (exit 2, key named, nothing written) and a tiny
train → sweep → compress → report round trip."""
import json
import os
import re
import subprocess
import sys

import pytest
import torch
import yaml

from sparsefw.cli import main
from sparsefw.experiments.compression import load_compressed
from sparsefw.experiments.evaluation import evaluate
from sparsefw.experiments.sweep import compress_model, load_trained

TINY = {
    "name": "tiny",
    "data": {"name": "mnist5k", "subset": [256, 200], "batch_size": 64, "eval_batch_size": 100},
    "model": {"name": "cnn", "widths": [4, 4, 8, 8]},
    "training": {"epochs": 1, "progress": False},
    "sweep": {"unstructured": [0.5, 0.9], "filters": [0.5], "lowrank": [0.5]},
    "methods": {"sgd": {"optimizer": {"name": "sgd", "weight_decay": 5e-4}},
                "sfw": {"optimizer": {"name": "sfw", "mode": "group_k_support", "k": 0.5, "width": 5.0}}},
}


@pytest.fixture
def cfg_file(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY))
    return path


@pytest.mark.parametrize("extra, key, words", [
    (["--set", "optimizer.lr=abc"], "optimizer.lr", "expected a number, got 'abc'"),
    (["--set", "optimizer.lrate=0.1"], "optimizer.lrate", "unknown key"),
    (["--set", "training.epochs=[1]"], "training.epochs", "expected an integer"),
    (["--set", "optimizer.rescale=sometimes"], "optimizer.rescale", "must be one of"),
    (["--set", "data.name=cifar11"], "data", "unknown dataset"),
    (["--set", "methods.sfw.optimizer.k=0"], "optimizer.k", "method 'sfw'"),
])
def test_bad_config_exits_2_names_the_key_and_writes_nothing(cfg_file, tmp_path, capsys, extra, key, words):
    out = tmp_path / "out"
    assert main(["train", "--config", str(cfg_file), "--out", str(out), *extra]) == 2
    err = capsys.readouterr().err
    assert f"'{key}'" in err and words in err
    assert not out.exists()


def test_missing_config_file_and_run(tmp_path, capsys):
    assert main(["train", "--config", str(tmp_path / "nope.yaml"), "--out", str(tmp_path / "o")]) == 2
    assert "not found" in capsys.readouterr().err
    assert main(["sweep", "--run", str(tmp_path / "no_run")]) == 2
    assert "no checkpoint" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_console_script_exit_code(cfg_file, tmp_path):
    done = subprocess.run([sys.executable, "-m", "sparsefw.cli", "train", "--config", str(cfg_file),
                           "--set", "schedule.name=sawtooth", "--out", str(tmp_path / "o")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "'schedule.name'" in done.stderr
    assert not (tmp_path / "o").exists()


def test_train_sweep_compress_report_round_trip(cfg_file, tmp_path, capsys):
    out = tmp_path / "runs"
    assert main(["train", "--config", str(cfg_file), "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["sfw", "sgd"]
    assert main(["train", "--config", str(cfg_file), "--out", str(out)]) == 2          # would overwrite
    assert "--resume" in capsys.readouterr().err
    assert main(["train", "--resume", "--out", str(out)]) == 0                          # finished: no-op
    capsys.readouterr()

    assert main(["sweep", "--run", str(out / "sgd"), "--run", str(out / "sfw"),
                 "--set", "sweep.lowrank=[0.25, 0.5]"]) == 0
    printed = capsys.readouterr().out
    assert "| sgd |" in printed and "| sfw |" in printed and "25% rank removed" in printed
    rows = json.loads((out / "sfw" / "sweep.json").read_text())["rows"]
    assert [(r["kind"], r["level"]) for r in rows] == [("dense", 0.0), ("unstructured", 0.5), ("unstructured", 0.9),
                                                       ("filters", 0.5), ("lowrank", 0.25), ("lowrank", 0.5)]

    assert main(["compress", "--run", str(out / "sfw"), "--kind", "filters", "--level", "0.5"]) == 0
    saved = out / "sfw" / "compressed" / "filters_0.5"
    assert "params_compressed" in capsys.readouterr().out
    summary = json.loads((saved / "summary.json").read_text())
    filters_row = rows[3]
    assert summary["accuracy"] == filters_row["accuracy"]                    # same compression as the sweep's
    assert summary["params_compressed"] == filters_row["params"]
    model, _, loader, info = load_trained(out / "sfw")
    reloaded = load_compressed(saved)
    assert evaluate(reloaded, loader, info.task, info.num_classes)["accuracy"] == summary["accuracy"]
    x = next(iter(loader))[0]
    fresh = compress_model(model, "filters", 0.5, x[:1])
    with torch.no_grad():
        torch.testing.assert_close(reloaded(x), fresh.eval()(x), rtol=0, atol=0)

    recal_dir = tmp_path / "recal"
    assert main(["compress", "--run", str(out / "sfw"), "--kind", "filters", "--level", "0.5",
                 "--bn-recalibration", "2", "--out", str(recal_dir)]) == 0
    capsys.readouterr()
    recal = json.loads((recal_dir / "summary.json").read_text())
    assert recal["bn_recalibration"] == 2 and summary["bn_recalibration"] == 0
    reloaded_recal = load_compressed(recal_dir)                        # the new statistics were saved
    assert evaluate(reloaded_recal, loader, info.task, info.num_classes)["accuracy"] == recal["accuracy"]
    bn = next(m for m in reloaded_recal.modules() if isinstance(m, torch.nn.BatchNorm2d))
    bn_plain = next(m for m in reloaded.modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert not torch.equal(bn.running_mean, bn_plain.running_mean)

    assert main(["report", str(out), "--out", str(tmp_path / "report")]) == 0
    table = capsys.readouterr().out
    assert table.splitlines()[0].startswith("| run (accuracy) | dense | 50% sparse | 90% sparse | 50% filters removed")
    assert {p.name for p in (tmp_path / "report").iterdir()} == {"report.md", "report.csv", "report.json", "report.png"}


def _spin_count(code: list[str], **env) -> str:
    """GOMP_SPINCOUNT as OpenMP reports it when torch loads it (OMP_DISPLAY_ENV): '0' is the passive
    wait policy, '300000' OpenMP's default, '30000000000' the active one."""
    base = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    done = subprocess.run([sys.executable, *code], capture_output=True, text=True, timeout=120,
                          env={**base, "OMP_DISPLAY_ENV": "VERBOSE", **env})
    assert done.returncode == 0, done.stderr[-2000:]
    return re.search(r"GOMP_SPINCOUNT = '(\d+)'", done.stderr).group(1)


def test_the_command_line_sets_a_passive_openmp_wait_policy_before_torch_loads():
    assert _spin_count(["-c", "import torch"]) == "300000"                       # OpenMP's default
    assert _spin_count(["-m", "sparsefw.cli", "--help"]) == "0"                  # python -m sparsefw.cli
    console_script = "import sys; from sparsefw.cli import main; sys.exit(main(['--help']))"   # what pip writes
    assert _spin_count(["-c", console_script]) == "0"
    assert _spin_count(["-m", "sparsefw.cli", "--help"], OMP_WAIT_POLICY="ACTIVE") == "30000000000"  # the user's
    assert _spin_count(["-c", "import sparsefw, sys; assert 'torch' not in sys.modules; import torch"]) == "300000"
