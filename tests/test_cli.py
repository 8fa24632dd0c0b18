"""The `sparsefw` command line: config errors (exit 2, key named, nothing written) and a tiny
train → sweep → compress → report round trip."""
import json
import os
import re
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from sparsefw.cli import main
from sparsefw.experiments.compression import load_compressed
from sparsefw.experiments.config import read_config_file
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
    (["--set", "model.widths=[4, 4, 8]"], "model.widths", "widths must be four positive ints"),
    (["--set", "model.depth=20"], "model.depth", "model 'cnn' takes no option 'depth' (its options: widths)"),
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
                 "--set", "sweep.lowrank=[0.25, 0.5]", "--set", "sweep.channels=[0.5]"]) == 0
    printed = capsys.readouterr().out
    assert "| sgd |" in printed and "| sfw |" in printed and "25% rank removed" in printed
    assert "50% channels removed" in printed
    rows = json.loads((out / "sfw" / "sweep.json").read_text())["rows"]
    assert [(r["kind"], r["level"]) for r in rows] == [("dense", 0.0), ("unstructured", 0.5), ("unstructured", 0.9),
                                                       ("filters", 0.5), ("channels", 0.5), ("lowrank", 0.25),
                                                       ("lowrank", 0.5)]

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

    assert main(["compress", "--run", str(out / "sfw"), "--kind", "channels", "--level", "0.5"]) == 0
    capsys.readouterr()
    coupled_dir = out / "sfw" / "compressed" / "channels_0.5"
    coupled = json.loads((coupled_dir / "summary.json").read_text())
    channels_row = rows[4]
    assert coupled["accuracy"] == channels_row["accuracy"] and coupled["params_compressed"] == channels_row["params"]
    assert coupled["params_compressed"] < coupled["params"]
    assert json.loads((coupled_dir / "recipe.json").read_text())["coupled"] is True
    reloaded_coupled = load_compressed(coupled_dir)                     # the recipe's slices replayed
    assert evaluate(reloaded_coupled, loader, info.task, info.num_classes)["accuracy"] == coupled["accuracy"]
    with torch.no_grad():
        torch.testing.assert_close(reloaded_coupled(x), compress_model(model, "channels", 0.5, x[:1]).eval()(x),
                                   rtol=0, atol=0)

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


# --- what a newcomer trips over (issue 18): each through the command line, in a subprocess --------
def _cli(*args, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sparsefw.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"}, **kwargs)


TINY_DEMO = ["--set", "data.subset=[300, 200]", "--set", "model.widths=[4, 4, 8, 8]", "--set", "training.epochs=3",
             "--set", "data.batch_size=16", "--set", "sweep.unstructured=[0.5, 0.9]", "--set", "sweep.filters=[0.5]",
             "--set", "sweep.lowrank=[0.5]", "--set", "sweep.channels=[0.5]"]


@pytest.fixture(scope="module")
def tiny_demo(tmp_path_factory):
    """(output folder, the finished demo's stdout) of `sparsefw demo` on tiny settings."""
    out = tmp_path_factory.mktemp("demo") / "demo"
    done = _cli("demo", "--out", out, *TINY_DEMO)
    assert done.returncode == 0, done.stderr[-3000:]
    return out, done.stdout


def test_demo_sentences_are_computed_from_the_runs_numbers(tiny_demo):
    out, printed = tiny_demo
    rows = {p.name: json.loads((p / "sweep.json").read_text())["rows"] for p in out.iterdir() if p.is_dir()}
    acc = {run: {(r["kind"], r["level"]): r["accuracy"] for r in rs} for run, rs in rows.items()}
    for mode, kind, level in [("sfw_k_support", "unstructured", 0.5), ("sfw_group_k_support", "filters", 0.5),
                              ("sfw_spectral_k_support", "lowrank", 0.5), ("sfw_coupled", "channels", 0.5)]:
        sentence = next(line for line in printed.splitlines() if line.endswith(".") and f", {mode} vs sgd:" in line)
        assert f"dense {acc[mode][('dense', 0.0)]:.3f} vs {acc['sgd'][('dense', 0.0)]:.3f}" in sentence
        a, b = acc[mode][(kind, level)], acc["sgd"][(kind, level)]      # each mode at its own kind
        if max(a, b) <= 0.15:
            assert "both near chance (0.10) at 50 %" in sentence
        else:   # the levels of this kind where one side leads; the sentence quotes the largest lead
            pairs = [(acc[mode][k], acc["sgd"][k]) for k in acc[mode]
                     if k[0] == kind and max(acc[mode][k], acc["sgd"][k]) > 0.15]
            if a - b >= 0.01:
                x, y = max(pairs, key=lambda p: p[0] - p[1])
                assert f"{mode} kept more accuracy at 50 %" in sentence and f"lead {x:.3f} vs {y:.3f}" in sentence
            elif b - a >= 0.01:
                x, y = max(pairs, key=lambda p: p[1] - p[0])
                assert "sgd kept more at 50 %" in sentence and f"({y:.3f} vs {x:.3f}" in sentence
            else:
                assert "even (within 0.01) at 50 %" in sentence
        assert f"| 50 % | {a:.3f} | {b:.3f} |" in printed
    assert "Coupled channel removal, sfw_coupled vs sgd:" in printed
    assert "mnist5k (300 training / 200 test images), one-shot compression, no retraining" in printed
    assert (out / "demo.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and (out / "demo.md").is_file()


def test_demo_times_coupled_removal_and_says_how_much_faster_from_the_rows(tiny_demo):
    """The coupled sentence's speed-up is sfw_coupled's dense latency over its 50 % channels row's, and
    the share of accuracy kept is that row's over dense; the other kinds' rows were not timed."""
    out, printed = tiny_demo
    rows = json.loads((out / "sfw_coupled" / "sweep.json").read_text())["rows"]
    dense, half = rows[0], next(r for r in rows if (r["kind"], r["level"]) == ("channels", 0.5))
    sentence = next(line for line in printed.splitlines() if line.startswith("Coupled channel removal, sfw_coupled"))
    ratio, kept = dense["latency_ms"] / half["latency_ms"], half["accuracy"] / dense["accuracy"]
    speed = f"{ratio:.2f}× faster" if ratio >= 1 else f"{1 / ratio:.2f}× slower"
    assert (f"at 50 % of channels removed sfw_coupled keeps {100 * kept:.0f} % of its dense accuracy "
            f"({half['accuracy']:.3f} vs ") in sentence
    assert (f"runs {speed} than dense ({half['latency_ms']:.1f} vs {dense['latency_ms']:.1f} ms, measured: "
            f"batch 200, 1 thread, median of {dense['latency_rounds']} interleaved rounds)") in sentence
    assert half["speedup"] == pytest.approx(ratio) and dense["latency_batch"] == 200
    assert [r["kind"] for r in rows if "latency_ms" in r] == ["dense", "channels"]


def test_demo_plot_has_a_panel_per_pair_the_coupled_one_against_measured_latency(tiny_demo):
    import matplotlib.pyplot as plt
    from sparsefw.experiments.demo import comparison_figure, run_demo
    out, _ = tiny_demo
    result = run_demo(out, TINY_DEMO[1::2], progress=False)     # every run finished and swept: a reprint
    fig = comparison_figure(result["comparisons"], result["data"])
    try:
        assert len(fig.axes) == 4 and [ax.get_xlabel()[:9] for ax in fig.axes] == ["% removed"] * 3 + ["measured "]
        timed = fig.axes[3]
        for run, line in zip(["sfw_coupled", "sgd"], timed.get_lines()[::2]):      # each line, then its dense star
            rows = json.loads((out / run / "sweep.json").read_text())["rows"]
            assert list(line.get_xdata()) == [r["latency_ms"] for r in rows if r["kind"] in ("dense", "channels")]
            assert list(line.get_ydata()) == [r["accuracy"] for r in rows if r["kind"] in ("dense", "channels")]
        assert [t.get_text() for t in timed.texts] == ["dense", "50 %"] * 2
        assert any(set(line.get_ydata()) == {0.1} for line in timed.get_lines())           # chance
    finally:
        plt.close(fig)


def test_demo_with_other_settings_says_what_to_do(tiny_demo):
    out, _ = tiny_demo
    before = {p: p.read_bytes() for p in out.glob("*/checkpoint.pt")}
    done = _cli("demo", "--out", out, *TINY_DEMO, "--set", "training.epochs=4")
    assert done.returncode == 2
    assert "already holds a demo run with other settings" in done.stderr and "training.epochs" in done.stderr
    assert "another --out" in done.stderr and "--resume" in done.stderr and "Traceback" not in done.stderr
    assert {p: p.read_bytes() for p in out.glob("*/checkpoint.pt")} == before          # nothing retrained
    assert _cli("demo", "--out", out, "--resume", "--set", "training.epochs=4").returncode == 2
    resumed = _cli("demo", "--out", out, "--resume")                   # that demo, with its own settings
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "epoch" not in resumed.stdout and "300 training / 200 test images" in resumed.stdout
    assert {p: p.read_bytes() for p in out.glob("*/checkpoint.pt")} == before


def test_report_skips_folders_without_a_sweep_with_a_note(tiny_demo, tmp_path):
    out, _ = tiny_demo
    runs = set(read_config_file("demo")["methods"])                # the demo's runs
    for attempt in range(2):                       # the second time `out/*` also matches out/report
        matched = sorted(out.glob("*"))            # what the shell makes of `sparsefw report out/*`
        done = _cli("report", *matched, "--out", out / "report")
        assert done.returncode == 0, done.stderr[-2000:]
        notes = [line for line in done.stderr.splitlines() if line.startswith("note: skipped")]
        skipped = {p.name for p in matched} - runs
        assert len(notes) == len(skipped) and all(any(f"/{name}'" in n for n in notes) for name in skipped)
        assert ("report" in skipped) == (attempt == 1)
        table = done.stdout.splitlines()
        assert {line.split(" | ")[0].strip("| ") for line in table[2:]} == runs
    assert _cli("report", out / "demo.md", "--out", tmp_path / "r").returncode == 2      # no run left: an error
    assert not (tmp_path / "r").exists()


def test_ctrl_c_in_train_prints_one_line_with_the_resume_command(tmp_path):
    # many epochs: under load the test may read "epoch 2" late, and a short run would be over before the signal
    cfg = {**{k: v for k, v in TINY.items() if k != "methods"}, "training": {"epochs": 40, "progress": False}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    out = tmp_path / "run"
    # SIGINT at its default in the child: an ignored SIGINT is inherited across exec (a shell's background
    # job, or the test process after some earlier test) and Python then never raises KeyboardInterrupt
    proc = subprocess.Popen([sys.executable, "-m", "sparsefw.cli", "train", "--config", str(tmp_path / "c.yaml"),
                             "--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"},
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    for line in proc.stdout:
        if "epoch 2/40" in line:
            proc.send_signal(signal.SIGINT)                  # what Ctrl-C sends
            break
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    done = len(json.loads((out / "metrics.json").read_text())["epochs"])
    assert 2 <= done < 40
    assert f"last checkpoint {out / 'checkpoint.pt'} (after epoch {done})" in lines[0]
    command = lines[0].split("Resume with: ")[1]
    assert shlex.split(command) == ["sparsefw", "train", "--config", str(tmp_path / "c.yaml"), "--out", str(out),
                                    "--resume"]
    resumed = subprocess.run([sys.executable, "-m", "sparsefw.cli", *shlex.split(command)[1:]], capture_output=True,
                             text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    epochs = json.loads((out / "metrics.json").read_text())["epochs"]
    assert [e["epoch"] for e in epochs] == list(range(1, 41))
    assert f"epoch {done + 1}/40" in resumed.stdout and f"epoch {done}/40" not in resumed.stdout


def test_readme_gives_ddp_its_own_out_and_tells_python_users_the_wait_policy():
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    ddp = [line for line in readme.splitlines() if "--nproc" in line and line.lstrip().startswith(("sparsefw", "torch"))]
    assert ddp and all(re.search(r"--out (\S+)", line) and "runs/demo " not in line + " " for line in ddp)
    assert "OMP_WAIT_POLICY=PASSIVE" in readme and "before" in readme.split("OMP_WAIT_POLICY=PASSIVE", 1)[1][:400]
