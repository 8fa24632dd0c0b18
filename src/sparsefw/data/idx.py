"""Reader for the IDX format of (Fashion-)MNIST, plain or gzip-compressed.

Layout: 2 zero bytes, a type code (0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32, 0x0D float32,
0x0E float64), the number of dimensions d, then d big-endian uint32 sizes, then the prod(sizes)
entries in big-endian C order. Every deviation raises DatasetFormatError.
"""
from __future__ import annotations

import gzip
import math
import zlib
from pathlib import Path

import numpy as np

from .errors import DatasetFormatError, DatasetNotFoundError

_IDX_DTYPES = {0x08: np.dtype("u1"), 0x09: np.dtype("i1"), 0x0B: np.dtype(">i2"),
               0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}
_GZIP_MAGIC = b"\x1f\x8b"


def _read_bytes(path: Path) -> bytes:
    raw = path.read_bytes()
    if not raw.startswith(_GZIP_MAGIC):
        return raw
    try:
        return gzip.decompress(raw)
    except (EOFError, OSError, zlib.error) as e:
        raise DatasetFormatError(f"{path}: corrupt or truncated gzip data ({e})") from e


def read_idx(path: str | Path) -> np.ndarray:
    """The array stored in an IDX file (gzip detected from its magic bytes), native byte order."""
    path = Path(path)
    if not path.is_file():
        raise DatasetNotFoundError(f"IDX file not found: {path}")
    data = _read_bytes(path)
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise DatasetFormatError(f"{path}: not an IDX file (bad magic number {data[:4].hex() or 'empty'})")
    code, ndim = data[2], data[3]
    if code not in _IDX_DTYPES:
        raise DatasetFormatError(f"{path}: unknown IDX type code 0x{code:02x}")
    if ndim == 0:
        raise DatasetFormatError(f"{path}: IDX header declares 0 dimensions")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DatasetFormatError(f"{path}: truncated IDX header ({len(data)} bytes, need {header})")
    shape = tuple(int(s) for s in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    dtype = _IDX_DTYPES[code]
    expected = header + math.prod(shape) * dtype.itemsize
    if len(data) != expected:
        raise DatasetFormatError(f"{path}: IDX header declares shape {shape} of {dtype} "
                                 f"({expected} bytes) but the file holds {len(data)} bytes "
                                 f"({'truncated' if len(data) < expected else 'trailing data'})")
    array = np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)
    return array.astype(dtype.newbyteorder("="), copy=True)
