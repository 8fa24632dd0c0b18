"""m2nist: targets rebuilt pixel by pixel from the recorded digit placements and the raw digits."""
import numpy as np
import pytest
import torch

from sparsefw.data import get_datasets
from sparsefw.data.m2nist import CANVAS, DIGIT, THRESHOLD
from sparsefw.data.mnist import mnist5k_raw, mnist5k_split


@pytest.fixture(scope="module")
def m2nist():
    return get_datasets("m2nist", subset=(60, 30))


def test_targets_and_images_match_the_placed_digits(m2nist):
    train, test, info = m2nist
    assert (info.task, info.num_classes, info.image_size, info.in_channels) == ("segmentation", 11, CANVAS, 1)
    images, labels = mnist5k_raw()
    for ds in (train, test):
        for n in range(len(ds)):
            canvas = np.zeros((CANVAS, CANVAS))
            target = np.zeros((CANVAS, CANVAS), dtype=np.int64)
            for digit, top, left in ds.placements[n].tolist():
                if digit < 0:
                    continue
                patch = images[digit].astype(np.int64)
                assert not canvas[top:top + DIGIT, left:left + DIGIT].any()        # digits never overlap
                canvas[top:top + DIGIT, left:left + DIGIT] = patch
                target[top:top + DIGIT, left:left + DIGIT] = np.where(patch > THRESHOLD, labels[digit] + 1, 0)
            x, y = ds[n]
            assert y.dtype == torch.int64 and y.shape == (CANVAS, CANVAS)
            np.testing.assert_array_equal(y.numpy(), target)
            raw = (x[0].numpy() * info.std[0] + info.mean[0]) * 255
            np.testing.assert_allclose(raw, canvas, atol=1e-3)
            assert ((raw > THRESHOLD + 0.5) == (target > 0)).all()


def test_one_to_three_digits_from_disjoint_pools(m2nist):
    train, test, _ = m2nist
    train_pool, test_pool = (set(p.tolist()) for p in mnist5k_split())
    for ds, pool in ((train, train_pool), (test, test_pool)):
        used = ds.placements[..., 0]
        counts = (used >= 0).sum(1)
        assert counts.min() >= 1 and counts.max() <= 3 and len(set(counts.tolist())) == 3
        assert set(used[used >= 0].tolist()) <= pool


def test_deterministic_and_all_classes_present():
    a, _, _ = get_datasets("m2nist", subset=(300, 10))
    b, _, _ = get_datasets("m2nist", subset=(300, 10))
    assert torch.equal(a.images, b.images) and torch.equal(a.targets, b.targets)
    assert set(torch.unique(a.targets).tolist()) == set(range(11))
