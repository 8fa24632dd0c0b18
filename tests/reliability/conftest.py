"""Reliability tests run their tiny models on one thread (and start subprocesses with OMP_NUM_THREADS=1):
on a shared 2-core machine two threads per tiny op mostly wait for each other, and equal thread counts
keep in-process and subprocess runs bitwise comparable."""
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
