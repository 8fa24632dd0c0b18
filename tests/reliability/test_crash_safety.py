"""SIGKILL mid-training: `sparsefw train --resume` then ends bitwise where an uninterrupted run ends,
and no half-written checkpoint or metrics file is ever read.

The training process is killed at a deterministic point (crash_runner.py): right after a chosen
optimizer step in the middle of epoch 2, or halfway through writing the epoch-2 checkpoint.
"""
import json
import signal
import subprocess

import pytest
import torch
import yaml

from reliability_helpers import STEPS_PER_EPOCH, TINY_RUN, one_thread_env, script
from sparsefw.cli import main
from sparsefw.experiments.checkpoint import CheckpointError, load_checkpoint


@pytest.fixture(scope="module")
def config_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("crash") / "crash.yaml"
    path.write_text(yaml.safe_dump(TINY_RUN))
    return path


@pytest.fixture(scope="module")
def uninterrupted(config_file):
    out = config_file.parent / "uninterrupted"
    torch.set_num_threads(1)             # module fixtures run before the per-test one-thread fixture
    assert main(["train", "--config", str(config_file), "--out", str(out)]) == 0
    return out


def _killed_run(config_file, out, mode, n):
    done = subprocess.run([*script("crash_runner.py"), mode, str(n), "--", "train", "--config", str(config_file),
                           "--out", str(out)], capture_output=True, text=True, env=one_thread_env(), timeout=300)
    assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]
    return done


def _without_times(rows):
    return [{k: v for k, v in row.items() if k != "epoch_time"} for row in rows]


def _assert_same_run(a, b):
    ca, cb = load_checkpoint(a), load_checkpoint(b)
    assert ca["epoch"] == cb["epoch"] == 3
    assert ca["model"].keys() == cb["model"].keys()
    for name, tensor in ca["model"].items():
        assert torch.equal(tensor, cb["model"][name]), name
    for key, state in ca["optimizer"]["state"].items():
        for name, value in state.items():
            assert torch.equal(value, cb["optimizer"]["state"][key][name]), (key, name)
    ma, mb = (json.loads((d / "metrics.json").read_text()) for d in (a, b))
    assert _without_times(ma["epochs"]) == _without_times(mb["epochs"])
    assert len(ma["epochs"]) == 3


def _on_disk_after_epoch_one(out):
    """The state a kill in epoch 2 must leave: the complete epoch-1 checkpoint and matching metrics."""
    assert load_checkpoint(out)["epoch"] == 1
    assert [row["epoch"] for row in json.loads((out / "metrics.json").read_text())["epochs"]] == [1]


def test_sigkill_mid_epoch_then_resume_matches_uninterrupted(config_file, uninterrupted):
    out = config_file.parent / "killed_mid_epoch"
    _killed_run(config_file, out, "after-steps", STEPS_PER_EPOCH + 2)          # step 2 of epoch 2
    _on_disk_after_epoch_one(out)
    assert main(["train", "--resume", "--out", str(out)]) == 0
    _assert_same_run(uninterrupted, out)


def test_sigkill_while_writing_checkpoint_never_exposes_a_partial_file(config_file, uninterrupted):
    out = config_file.parent / "killed_in_save"
    _killed_run(config_file, out, "in-save", 2)                                # the epoch-2 checkpoint
    _on_disk_after_epoch_one(out)                                              # checkpoint.pt is still epoch 1
    partial = list(out.glob(".checkpoint.pt.*.tmp"))
    assert len(partial) == 1                                                   # the half-written bytes exist...
    assert 0 < partial[0].stat().st_size < (out / "checkpoint.pt").stat().st_size
    with pytest.raises(CheckpointError, match="truncated or corrupt"):        # ...and are unreadable if read
        load_checkpoint(partial[0])
    assert main(["train", "--resume", "--out", str(out)]) == 0
    _assert_same_run(uninterrupted, out)
    assert not list(out.glob(".*.tmp"))                                        # --resume cleared them
