"""The fortunes character corpus: parsing, split, vocabulary, windows, subsets and errors — on a small
corpus written here, and on Debian's `fortunes` package when it is installed."""
from pathlib import Path

import pytest
import torch

from sparsefw.data import (DatasetInfo, DatasetNotFoundError, TokenDataset, decode, encode, fortunes_text,
                           fortunes_vocabulary, get_datasets)
from sparsefw.data.text import CONTEXT, load_fortunes, read_fortunes, split_fortunes, windows

FORTUNES_DIR = Path("/usr/share/games/fortunes")
needs_fortunes = pytest.mark.skipif(not FORTUNES_DIR.is_dir(), reason="Debian package fortunes not installed")


def _fake_corpus(folder: Path) -> list[str]:
    """Two fortune files (written out of order), an index, a link and an `off/` folder that must be
    skipped; returns the fortunes in the order the loader numbers them (cleaned)."""
    a = [f"fortune a{i}: the quick brown fox\n\t-- jumps {i}" for i in range(14)]
    b = [f"b{i} caf\u00e9 bold\bX" for i in range(9)]
    (folder / "b").write_text("%\n".join(f + "\n" for f in b) + "%\n", encoding="utf-8")
    (folder / "a").write_text("%\n".join(f + "\n" for f in a), encoding="utf-8")
    (folder / "a.dat").write_bytes(b"\x00\x01binary")
    (folder / "a.u8").symlink_to("a")
    (folder / "off").mkdir()
    (folder / "off" / "rude").write_text("never read\n%\n")
    return a + [f.replace("\u00e9", "?").replace("\b", "?") for f in b]


def test_parsing_split_and_vocabulary_of_a_small_corpus(tmp_path):
    fortunes = _fake_corpus(tmp_path)
    train, test, vocab = fortunes_text(tmp_path)
    assert test == "\n\n".join(fortunes[0::10]) and fortunes[10] in test and fortunes[20] in test
    assert train == "\n\n".join(f for i, f in enumerate(fortunes) if i % 10)
    assert vocab == "".join(sorted(set(train + test))) and "?" in vocab and "\t" in vocab
    assert "never" not in train + test and "binary" not in train + test
    assert split_fortunes("one\n%\n\n%\ntwo\nlines\n%\n") == ["one", "two\nlines"]


def test_windows_targets_are_the_inputs_shifted_by_one():
    ids = torch.arange(3 * CONTEXT + 5)
    inputs, targets = windows(ids)
    assert inputs.shape == targets.shape == (3, CONTEXT) and inputs.dtype == targets.dtype == torch.int64
    assert torch.equal(inputs.flatten(), ids[:3 * CONTEXT])                  # non-overlapping, in order
    assert torch.equal(targets, inputs + 1)


def test_small_corpus_datasets_and_info(tmp_path):
    _fake_corpus(tmp_path)
    train, test, info = load_fortunes(tmp_path)
    vocab = fortunes_vocabulary(tmp_path)
    assert info == DatasetInfo("fortunes", len(vocab), 1, CONTEXT, "language_modeling")
    assert isinstance(train, TokenDataset) and train.vocabulary == vocab
    x, y = train[0]
    assert x.shape == y.shape == (CONTEXT,) and x.dtype == y.dtype == torch.int64
    assert torch.equal(x[1:], y[:-1])
    assert decode(train.images, vocab) == fortunes_text(tmp_path)[0][:len(train) * CONTEXT]


def test_encode_decode_round_trip_and_unknown_characters():
    vocab = "\n !?abcdeh"
    ids = encode("a bad\nhead?", vocab)
    assert ids.dtype == torch.int64 and decode(ids, vocab) == "a bad\nhead?"
    assert decode(encode("bé", vocab), vocab) == "b?"                 # cleaned first: é → ?
    with pytest.raises(ValueError, match=r"characters \['z'\] are not in the vocabulary"):
        encode("zebec", vocab)


def test_missing_folder_names_the_package(tmp_path):
    with pytest.raises(DatasetNotFoundError, match=r"does not exist; install it with `apt install fortunes`"):
        get_datasets("fortunes", data_dir=tmp_path / "nowhere")


def test_augment_is_rejected_and_subset_bounds_checked(tmp_path):
    _fake_corpus(tmp_path)
    with pytest.raises(ValueError, match="augment=True is not supported for the text dataset 'fortunes'"):
        get_datasets("fortunes", data_dir=tmp_path, augment=True)
    with pytest.raises(ValueError, match=r"asks for 99 test items but the split has \d+"):
        get_datasets("fortunes", data_dir=tmp_path, subset=(1, 99))


@needs_fortunes
def test_real_corpus_split_is_deterministic_disjoint_and_its_vocabulary_fixed():
    train, test, info = get_datasets("fortunes")
    again, again_test, _ = get_datasets("fortunes")
    assert torch.equal(train.images, again.images) and torch.equal(test.targets, again_test.targets)
    vocab = fortunes_vocabulary()
    assert info.num_classes == len(vocab) <= 97 and vocab == "".join(sorted(vocab))
    assert set(vocab) <= set(map(chr, range(32, 127))) | {"\n", "\t"}
    assert len(train) > 30000 and len(test) > 3000 and info.task == "language_modeling"
    assert torch.equal(train.images[:, 1:], train.targets[:, :-1])
    assert torch.equal(train.images[1:, 0], train.targets[:-1, -1])        # windows follow each other
    train_text, test_text, _ = fortunes_text()
    fortunes = read_fortunes(FORTUNES_DIR)
    held_out, rest = fortunes[::10], [f for i, f in enumerate(fortunes) if i % 10]
    assert test_text == "\n\n".join(held_out) and train_text == "\n\n".join(rest)
    assert len(set(held_out) & set(rest)) <= 12                           # fortunes the package repeats
    assert decode(test.images[0], vocab) == test_text[:CONTEXT]


@needs_fortunes
def test_real_corpus_subsets_are_seeded_nested_windows():
    full, full_test, _ = get_datasets("fortunes")
    small, small_test, _ = get_datasets("fortunes", subset=(50, 20))
    big, _, _ = get_datasets("fortunes", subset=(80, 20))
    assert (len(small), len(small_test)) == (50, 20) and small.images.dtype == torch.int64
    assert torch.equal(big.images[:50], small.images)                     # the first n of one order
    rows = {tuple(r) for r in full.images.tolist()}
    assert all(tuple(r) in rows for r in small.images.tolist())
    assert not torch.equal(small.images, full.images[:50])                # random, not the corpus start
    assert torch.equal(small.images[:, 1:], small.targets[:, :-1])
