"""Data-parallel failures end fast and say so in one line: a finite timeout on the rendezvous and
on every collective (SPARSEFW_DIST_TIMEOUT), and one short error instead of tracebacks per rank."""
import re
import subprocess
import sys

import pytest
import yaml

from reliability_helpers import TINY_RUN, free_port, one_thread_env
from sparsefw.experiments import distributed

LONE_WAIT = """
import os, sys, time, torch, torch.distributed as dist
from sparsefw.experiments import distributed
info = distributed.env_info()
distributed.init(info, torch.device("cpu"))
if info.rank == 1:
    time.sleep(100)                                       # never comes to the barrier in time
try:
    dist.barrier()
except RuntimeError as e:                                 # gloo raises RuntimeError, c10d DistError
    print("rank 0 gave up:", str(e).splitlines()[0], flush=True)
    sys.exit(3)
"""


HUNG_EXIT = """
import os, time, torch, torch.distributed as dist
from sparsefw.experiments import distributed
dist.init_process_group("gloo", rank=0, world_size=1, init_method="tcp://127.0.0.1:%d")
dist.destroy_process_group = lambda: time.sleep(100)     # a deadlock while leaving the group
distributed.teardown(distributed.DistInfo(rank=0, world_size=2))
print("left")
"""


def _cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "sparsefw.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=180, env=env or one_thread_env())


def test_timeout_is_finite_and_validated(monkeypatch):
    monkeypatch.delenv(distributed.TIMEOUT_ENV, raising=False)
    assert distributed.timeout().total_seconds() == 60
    monkeypatch.setenv(distributed.TIMEOUT_ENV, "2.5")
    assert distributed.timeout().total_seconds() == 2.5
    for bad in ("0", "-1", "inf", "nan", "soon"):
        monkeypatch.setenv(distributed.TIMEOUT_ENV, bad)
        with pytest.raises(ValueError, match=f"SPARSEFW_DIST_TIMEOUT={bad!r}"):
            distributed.timeout()


def test_a_rank_whose_peer_never_comes_fails_in_seconds_with_one_line(tmp_path):
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(TINY_RUN))
    env = one_thread_env(WORLD_SIZE="2", RANK="0", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1",
                         MASTER_PORT=str(free_port()), SPARSEFW_DIST_TIMEOUT="3")
    done = _cli("train", "--config", tmp_path / "c.yaml", "--out", tmp_path / "out", env=env)   # rank 1 never starts
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sparsefw train: error (rank 0): DistStoreError"), done.stderr
    assert re.search(r"Timed out after \d+ seconds waiting for clients\. 1/2 clients joined", lines[0])


def test_a_collective_times_out_when_a_rank_hangs(tmp_path):
    (tmp_path / "lone_wait.py").write_text(LONE_WAIT)
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                           "--master-addr=127.0.0.1", f"--master-port={free_port()}", str(tmp_path / "lone_wait.py")],
                          capture_output=True, text=True, timeout=90, env=one_thread_env(SPARSEFW_DIST_TIMEOUT="3"))
    assert done.returncode != 0, done.stderr[-2000:]
    assert re.search(r"rank 0 gave up: .*Timed out waiting 3000ms", done.stdout), done.stdout + done.stderr[-2000:]


def test_a_failing_rank_prints_one_short_error(tmp_path):
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(TINY_RUN))
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "checkpoint.pt").write_bytes(b"a run is here")
    done = _cli("train", "--config", tmp_path / "c.yaml", "--out", tmp_path / "out", "--nproc-per-node", "2")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"sparsefw train: error: '{tmp_path / 'out'}' already holds a run (checkpoint.pt); pass --resume to "
        "continue it or choose another --out"]
    assert done.stdout == ""


def test_a_hang_while_leaving_the_group_ends_with_the_stacks_and_status_1(tmp_path):
    (tmp_path / "hung_exit.py").write_text(HUNG_EXIT % free_port())
    done = subprocess.run([sys.executable, str(tmp_path / "hung_exit.py")], capture_output=True, text=True,
                          timeout=90, env=one_thread_env(SPARSEFW_DIST_TIMEOUT="2"))
    assert done.returncode == 1 and "left" not in done.stdout
    assert "Timeout (0:00:02)!" in done.stderr and "in teardown" in done.stderr, done.stderr[-2000:]
