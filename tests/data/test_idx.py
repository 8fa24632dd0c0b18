"""IDX reading against files written byte by byte here from real MNIST digits, and the Fashion-MNIST
loader on such files (flat and torchvision layouts, missing and corrupt cases)."""
import gzip
import struct

import numpy as np
import pytest
import torch

from sparsefw.data import DatasetFormatError, DatasetNotFoundError, get_datasets, read_idx
from sparsefw.data.mnist import mnist5k_raw


def idx_bytes(array: np.ndarray, code: int, dtype: str) -> bytes:
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(dtype).tobytes()


@pytest.fixture(scope="module")
def digits():
    images, labels = mnist5k_raw()
    pick = np.arange(0, 5000, 97)      # 52 real digits, every class
    return images[pick], labels[pick].astype(np.uint8)


@pytest.mark.parametrize("compress", [False, True])
def test_uint8_images_round_trip(tmp_path, digits, compress):
    images, labels = digits
    data = idx_bytes(images, 0x08, "u1")
    path = tmp_path / ("img.gz" if compress else "img")
    path.write_bytes(gzip.compress(data) if compress else data)
    out = read_idx(path)
    assert out.dtype == np.uint8 and out.shape == images.shape
    np.testing.assert_array_equal(out, images)


def test_big_endian_types_are_decoded(tmp_path):
    values = np.array([[-30000, 1, 258], [7, -1, 32767]])
    (tmp_path / "s16").write_bytes(idx_bytes(values, 0x0B, ">i2"))
    np.testing.assert_array_equal(read_idx(tmp_path / "s16"), values)
    floats = np.array([0.5, -1.25e3, 3.0])
    (tmp_path / "f64").write_bytes(idx_bytes(floats, 0x0E, ">f8"))
    np.testing.assert_array_equal(read_idx(tmp_path / "f64"), floats)


def test_corrupt_files_raise_format_error(tmp_path, digits):
    data = idx_bytes(digits[0], 0x08, "u1")
    cases = {"truncated": data[:-100], "trailing": data + b"\x00", "magic": b"\x01" + data[1:],
             "type": data[:2] + b"\x07" + data[3:], "header": data[:9],
             "gz_truncated.gz": gzip.compress(data)[:-50]}
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(DatasetFormatError, match=str(tmp_path / name)):
            read_idx(tmp_path / name)
    assert issubclass(DatasetFormatError, ValueError)


def test_missing_file_is_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_idx(tmp_path / "nope")


def write_fashion_dir(folder, digits, compress=True):
    images, labels = digits
    folder.mkdir(parents=True, exist_ok=True)
    for split, sl in (("train", slice(0, 40)), ("t10k", slice(40, None))):
        for kind, arr, code in (("images", images[sl], 3), ("labels", labels[sl], 1)):
            data = idx_bytes(arr, 0x08, "u1")
            name = f"{split}-{kind}-idx{code}-ubyte"
            (folder / (name + ".gz" if compress else name)).write_bytes(gzip.compress(data) if compress else data)


@pytest.mark.parametrize("layout", ["flat_gz", "flat_raw", "torchvision"])
def test_fashion_loader_reads_idx_dirs(tmp_path, digits, layout):
    folder = tmp_path / "FashionMNIST" / "raw" if layout == "torchvision" else tmp_path
    write_fashion_dir(folder, digits, compress=layout != "flat_raw")
    train, test, info = get_datasets("fashion_mnist", data_dir=tmp_path)
    assert (len(train), len(test)) == (40, 12)
    raw = train.images[:, 0] * info.std[0] + info.mean[0]          # undo normalisation
    np.testing.assert_allclose(raw.numpy() * 255, digits[0][:40], atol=1e-3)
    torch.testing.assert_close(test.targets, torch.as_tensor(digits[1][40:], dtype=torch.int64))


def test_missing_fashion_dir_says_how_to_get_it(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="apt-get install dataset-fashion-mnist"):
        get_datasets("fashion_mnist", data_dir=tmp_path / "absent")
    with pytest.raises(FileNotFoundError, match="--data-dir"):       # dir exists, files do not
        get_datasets("fashion_mnist32", data_dir=tmp_path)


def test_fashion_labels_out_of_range_rejected(tmp_path, digits):
    images, labels = digits
    write_fashion_dir(tmp_path, (images, labels + 10))
    with pytest.raises(DatasetFormatError, match="0..9"):
        get_datasets("fashion_mnist", data_dir=tmp_path)
