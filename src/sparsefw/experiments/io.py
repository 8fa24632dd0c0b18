"""Atomic file writes: every result file is written to a temporary file in the same directory and
moved into place with os.replace, so a reader (or a crash) never sees a half-written file. The files
get the mode an ordinary `open(path, "w")` would give them (0666 less the umask: 0644 under umask
022), not the private 0600 of `tempfile.mkstemp`."""
from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import torch


def _umask() -> int:
    """The process's umask (read by setting it and restoring it at once: there is no getter)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _write_atomic(path: str | os.PathLike, write: Callable[[Any], None], mode: str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, mode) as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def remove_stale_temporaries(directory: str | os.PathLike) -> list[Path]:
    """Delete the `.<name>.*.tmp` files an interrupted atomic write left in `directory`; returns them."""
    stale = sorted(Path(directory).glob(".*.tmp"))
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def write_text(path: str | os.PathLike, text: str) -> Path:
    return _write_atomic(path, lambda f: f.write(text), "w")


def write_json(path: str | os.PathLike, data: Any) -> Path:
    return write_text(path, json.dumps(data, indent=2, allow_nan=True) + "\n")


def write_csv(path: str | os.PathLike, rows: Iterable[Mapping[str, Any]]) -> Path:
    """Rows as dicts; the header is the union of their keys in first-seen order."""
    rows = list(rows)
    fields: list[str] = []
    for row in rows:
        fields.extend(k for k in row if k not in fields)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return write_text(path, buf.getvalue())


def save_torch(path: str | os.PathLike, obj: Any) -> Path:
    return _write_atomic(path, lambda f: torch.save(obj, f), "wb")


def save_figure(path: str | os.PathLike, fig) -> Path:
    fmt = Path(path).suffix.lstrip(".") or "png"
    return _write_atomic(path, lambda f: fig.savefig(f, format=fmt, dpi=120, bbox_inches="tight"), "wb")
