"""A character-level English corpus: Debian's `fortunes` package (≈ 2.6 MB of fortune cookies).

The files of /usr/share/games/fortunes (sorted by name; `*.dat` indexes, `*.u8` links and
subfolders such as `off/` skipped) hold fortunes separated by lines holding only "%". Fortune i
(counted over the files in sorted order, fortunes in file order) goes to the validation ("test")
split when i ≡ 0 (mod 10), to the training split otherwise; a split's fortunes are joined with
"\\n\\n" (the package repeats a few fortunes in several files: 12 of the 1522 validation
fortunes also occur in the training split). Every character outside printable ASCII (" " … "~"),
"\\n" and "\\t" (the attributions' indentation) becomes "?" (non-ASCII letters, nroff overstrike
backspaces, bells), so the vocabulary, the sorted characters of the whole corpus, has at most 97
entries and is fixed (97 with Debian 12's fortunes 1:1.99.1).

Items are non-overlapping windows of CONTEXT = 64 token ids: window j reads ids 64j … 64j + 64 of
its split; its input is the first 64, its target the last 64 (each position's next character).
"""
from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import torch

from .base import DatasetInfo, TokenDataset
from .errors import FORTUNES_HINT, DatasetFormatError, DatasetNotFoundError

DEFAULT_DIR = Path("/usr/share/games/fortunes")
CONTEXT = 64
VALIDATION_EVERY = 10
REPLACEMENT = "?"
_KEPT = frozenset(map(chr, range(32, 127))) | {"\n", "\t"}


def clean_text(text: str) -> str:
    """`text` with every character outside printable ASCII, "\\n" and "\\t" replaced by "?"."""
    return "".join(c if c in _KEPT else REPLACEMENT for c in text)


def split_fortunes(text: str) -> list[str]:
    """The fortunes of one file's text: the blocks between lines holding only "%" (empty ones dropped)."""
    fortunes, lines = [], []
    for line in text.split("\n") + ["%"]:
        if line.rstrip("\r") == "%":
            block = "\n".join(lines).strip("\n")
            if block.strip():
                fortunes.append(block)
            lines = []
        else:
            lines.append(line)
    return fortunes


def fortune_files(data_dir: Path) -> list[Path]:
    """The fortune files of `data_dir` in sorted order (no `*.dat`, `*.u8`, folders or links elsewhere)."""
    return sorted(p for p in data_dir.iterdir()
                  if p.is_file() and not p.is_symlink() and p.suffix not in (".dat", ".u8"))


def read_fortunes(data_dir: Path) -> list[str]:
    """Every fortune of the files in `data_dir`, cleaned, files in sorted order (the split's numbering)."""
    fortunes = []
    for path in fortune_files(data_dir):
        fortunes += split_fortunes(clean_text(path.read_bytes().decode("utf-8", errors="replace")))
    return fortunes


@functools.lru_cache(maxsize=2)
def _corpus(data_dir: Path) -> tuple[str, str, str]:
    """(train text, test text, vocabulary) of the fortune files in `data_dir`."""
    fortunes = read_fortunes(data_dir)
    if len(fortunes) < VALIDATION_EVERY:
        raise DatasetFormatError(f"fortunes: found {len(fortunes)} fortunes in {data_dir}, need at least "
                                 f"{VALIDATION_EVERY} ({FORTUNES_HINT})")
    train = "\n\n".join(f for i, f in enumerate(fortunes) if i % VALIDATION_EVERY)
    test = "\n\n".join(fortunes[::VALIDATION_EVERY])
    return train, test, "".join(sorted(set(train) | set(test) | {"\n"}))


def fortunes_text(data_dir: str | Path | None = None) -> tuple[str, str, str]:
    """(train text, validation text, vocabulary) of the fortunes corpus, cleaned and split (cached)."""
    data_dir = Path(DEFAULT_DIR if data_dir is None else data_dir).expanduser().resolve()
    if not data_dir.is_dir():
        raise DatasetNotFoundError(f"fortunes directory {data_dir} does not exist; {FORTUNES_HINT}")
    return _corpus(data_dir)


def fortunes_vocabulary(data_dir: str | Path | None = None) -> str:
    """The corpus's characters in sorted order: token id i is character i."""
    return fortunes_text(data_dir)[2]


def encode(text: str, vocabulary: str) -> torch.Tensor:
    """int64 token ids of `text` (cleaned first; ValueError for a character outside `vocabulary`)."""
    return _ids(clean_text(text), vocabulary)


def _ids(clean: str, vocabulary: str) -> torch.Tensor:
    """int64 token ids of the already cleaned (ASCII) text `clean`."""
    table = np.full(128, -1, dtype=np.int64)
    table[[ord(c) for c in vocabulary]] = np.arange(len(vocabulary))
    ids = table[np.frombuffer(clean.encode("ascii"), dtype=np.uint8)]
    if (ids < 0).any():
        missing = sorted({c for c in clean if c not in vocabulary})
        raise ValueError(f"characters {missing!r} are not in the vocabulary")
    return torch.from_numpy(ids)


def decode(ids, vocabulary: str) -> str:
    """The text of token ids `ids` (any int tensor or sequence; flattened)."""
    return "".join(vocabulary[i] for i in torch.as_tensor(ids).flatten().tolist())


def windows(ids: torch.Tensor, context: int = CONTEXT) -> tuple[torch.Tensor, torch.Tensor]:
    """Non-overlapping (inputs, targets), both (N, context): window j's inputs are ids[j·c : j·c + c],
    its targets ids[j·c + 1 : j·c + c + 1]; N = (len(ids) − 1) // c."""
    n = (len(ids) - 1) // context
    inputs = ids[:n * context].view(n, context)
    targets = ids[1:n * context + 1].view(n, context)
    return inputs.clone(), targets.clone()


def load_fortunes(data_dir=None) -> tuple[TokenDataset, TokenDataset, DatasetInfo]:
    """(train, test, info) of the fortunes corpus; info.image_size is the context length (64) and
    info.num_classes the vocabulary size."""
    train_text, test_text, vocabulary = fortunes_text(data_dir)
    splits = [TokenDataset(*windows(_ids(t, vocabulary)), vocabulary) for t in (train_text, test_text)]   # cleaned
    info = DatasetInfo("fortunes", len(vocabulary), 1, CONTEXT, "language_modeling")
    return splits[0], splits[1], info
