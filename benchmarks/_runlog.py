"""Run logs of the training benchmarks: one JSON record per line, appended as each run finishes, so
that an interrupted benchmark resumes where it stopped (and two processes can share one log)."""
from __future__ import annotations

import json
import os
from pathlib import Path


def read_jsonl(path: Path) -> list[dict]:
    """Every record of the log (none if it does not exist yet)."""
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def append_jsonl(path: Path, record: dict) -> None:
    """Append one record as a single line, flushed to disk."""
    with path.open("a") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()
        os.fsync(f.fileno())
