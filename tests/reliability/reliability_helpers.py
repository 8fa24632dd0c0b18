"""Helpers shared by the reliability tests."""
import os
import socket
import sys
from pathlib import Path

HERE = Path(__file__).parent


def one_thread_env(**extra) -> dict:
    """The environment for a subprocess: this one, one thread per process, plus `extra`."""
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", **extra}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def script(name: str) -> list[str]:
    """[python, path of a script next to this file]."""
    return [sys.executable, str(HERE / name)]
