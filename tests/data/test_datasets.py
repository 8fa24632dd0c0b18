"""Fixed splits, stratified subsets, the real Fashion-MNIST files, and argument validation."""
import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from sparsefw.data import InMemoryDataset, available_datasets, get_datasets, stratified_indices, stratified_split
from sparsefw.data.mnist import mnist5k_raw, mnist5k_split

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")


def test_mnist5k_split_is_fixed_disjoint_and_stratified():
    train1, test1 = mnist5k_split()
    train2, test2 = mnist5k_split()
    assert torch.equal(train1, train2) and torch.equal(test1, test2)
    assert sorted(torch.cat([train1, test1]).tolist()) == list(range(5000))
    labels = torch.tensor(mnist5k_raw()[1])
    assert torch.bincount(labels[test1]).tolist() == [100] * 10
    assert torch.bincount(labels[train1]).tolist() == [400] * 10


def test_mnist5k_datasets_hold_the_real_digits():
    train, test, info = get_datasets("mnist5k")
    train_again, _, _ = get_datasets("mnist5k")
    assert torch.equal(train.images, train_again.images)
    images, labels = mnist5k_raw()
    idx = mnist5k_split()[1]
    raw = (test.images[:, 0] * info.std[0] + info.mean[0]) * 255
    np.testing.assert_allclose(raw.numpy(), images[idx.numpy()], atol=1e-3)
    assert torch.equal(test.targets, torch.as_tensor(labels[idx.numpy()]))
    x, y = train[3]
    assert x.shape == (1, 28, 28) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert (info.num_classes, info.in_channels, info.image_size, info.task) == (10, 1, 28, "classification")


def test_stratified_indices_quota_and_randomness():
    labels = torch.tensor([0] * 7 + [1] * 3 + [2] * 10)[torch.randperm(20, generator=torch.Generator().manual_seed(5))]
    # exact shares for n=6: 2.1, 0.9, 3.0 → floors 2, 0, 3; the missing one goes to the largest remainder (class 1)
    picks = [stratified_indices(labels, 6, seed) for seed in range(6)]
    for idx in picks:
        assert torch.bincount(labels[idx], minlength=3).tolist() == [2, 1, 3]
        assert torch.equal(idx, idx.sort().values) and len(set(idx.tolist())) == 6
    assert torch.equal(picks[0], stratified_indices(labels, 6, 0))
    assert len({tuple(p.tolist()) for p in picks}) > 1
    train, test = stratified_split(labels, 5, 0)
    assert sorted(torch.cat([train, test]).tolist()) == list(range(20))


def test_subset_is_stratified_and_taken_from_the_split():
    full_train, full_test, _ = get_datasets("mnist5k")
    train, test, _ = get_datasets("mnist5k", subset=(200, 50))
    assert isinstance(train, InMemoryDataset) and (len(train), len(test)) == (200, 50)
    assert torch.bincount(train.targets).tolist() == [20] * 10
    assert torch.bincount(test.targets).tolist() == [5] * 10
    # every subset image is a row of the full test split, with its label
    match = (test.images.flatten(1)[:, None] == full_test.images.flatten(1)[None]).all(-1)
    rows = match.float().argmax(1)
    assert match.any(1).all() and torch.equal(full_test.targets[rows], test.targets)


def test_batch_indexing_and_channel_view():
    train, _, _ = get_datasets("mnist5k", subset=(30, 10))
    rgb = InMemoryDataset(train.images, train.targets, channels=3)
    idx = [4, 1, 4, 29]
    images, targets = rgb[idx]
    assert images.shape == (4, 3, 28, 28) and targets.dtype == torch.int64
    assert torch.equal(images, torch.stack([rgb[i][0] for i in idx]))
    assert torch.equal(images[:, 2], train.images[idx, 0]) and torch.equal(targets, train.targets[idx])


@pytest.mark.skipif(not FASHION_DIR.is_dir(), reason="Debian package dataset-fashion-mnist not installed")
def test_real_fashion_mnist_and_padded_variant():
    train, test, info = get_datasets("fashion_mnist")
    assert (len(train), len(test)) == (60000, 10000)
    assert torch.bincount(train.targets).tolist() == [6000] * 10
    assert torch.bincount(test.targets).tolist() == [1000] * 10
    raw = train.images * info.std[0] + info.mean[0]
    assert raw.min() > -1e-5 and raw.max() < 1 + 1e-5 and abs(float(train.images.mean())) < 0.01
    train32, test32, info32 = get_datasets("fashion_mnist32", subset=(100, 100))
    assert (info32.in_channels, info32.image_size) == (3, 32)
    picked = stratified_indices(test.targets, 100, 0)
    for j, i in enumerate(picked[:5].tolist()):
        x32, y32 = test32[j]
        x28, y28 = test[i]
        assert x32.shape == (3, 32, 32) and y32 == y28
        assert torch.equal(x32[:, 2:30, 2:30], x28.expand(3, 28, 28))
        border = x32.clone()
        border[:, 2:30, 2:30] = info32.raw_zero[0]
        assert torch.allclose(border, torch.full_like(border, info32.raw_zero[0]))


def test_available_and_validation():
    names = available_datasets()
    assert {"mnist5k", "fashion_mnist", "fashion_mnist32", "m2nist"} <= set(names)
    assert ("digits" in names) == (importlib.util.find_spec("sklearn") is not None)
    with pytest.raises(ValueError, match="name='cifar11'"):
        get_datasets("cifar11")
    for bad in [(10,), (0, 5), (10, 5.0), "10"]:
        with pytest.raises(ValueError, match="subset"):
            get_datasets("mnist5k", subset=bad)
    with pytest.raises(ValueError, match="asks for 2000 test"):
        get_datasets("mnist5k", subset=(10, 2000))
    with pytest.raises(ValueError, match="augment"):
        get_datasets("m2nist", augment=True)


@pytest.mark.skipif(importlib.util.find_spec("sklearn") is None, reason="scikit-learn not installed")
def test_sklearn_digits():
    train, test, info = get_datasets("digits")
    assert (len(train), len(test), info.image_size) == (1437, 360, 8)
    assert abs(float(train.images.mean())) < 1e-4 and abs(float(train.images.std()) - 1) < 1e-3


@pytest.mark.skipif(importlib.util.find_spec("torchvision") is not None, reason="torchvision is installed")
@pytest.mark.parametrize("name", ["cifar10", "cifar100", "imagenet"])
def test_torchvision_datasets_need_the_extra(name, tmp_path):
    with pytest.raises(ImportError, match=r"pip install sparsefw\[vision\]"):
        get_datasets(name, data_dir=tmp_path)
