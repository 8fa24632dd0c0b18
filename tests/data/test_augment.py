"""RandomCropFlip: every output is a crop (maybe mirrored) of the fill-padded input; seeded by epoch."""
import pytest
import torch

from sparsefw.data import RandomCropFlip, get_datasets


@pytest.fixture(scope="module")
def base():
    train, _, info = get_datasets("mnist5k", subset=(40, 10))
    return train, info


def candidates(image, padding, fill):
    """All (padding·2+1)² crops of the padded image and their mirror images, by brute force."""
    padded = torch.full((image.shape[0], image.shape[1] + 2 * padding, image.shape[2] + 2 * padding), fill)
    padded[:, padding:-padding, padding:-padding] = image
    h, w = image.shape[1:]
    crops = [padded[:, dy:dy + h, dx:dx + w] for dy in range(2 * padding + 1) for dx in range(2 * padding + 1)]
    return crops + [c.flip(-1) for c in crops]


def test_outputs_are_crops_of_the_padded_image(base):
    train, info = base
    aug = RandomCropFlip(train, padding=3, flip=True, fill=info.raw_zero, seed=7)
    flipped = 0
    for i in range(len(train)):
        x, y = aug[i]
        x0, y0 = train[i]
        assert y == y0 and x.shape == x0.shape
        options = candidates(x0, 3, info.raw_zero[0])
        hits = [k for k, c in enumerate(options) if torch.allclose(x, c, atol=1e-6)]
        assert hits, f"item {i} is not a crop of its padded image"
        flipped += min(hits) >= len(options) // 2
    assert 0 < flipped < len(train)          # both flipped and unflipped items occur


def test_seeded_per_epoch(base):
    train, info = base
    a = RandomCropFlip(train, padding=2, seed=1)
    b = RandomCropFlip(train, padding=2, seed=1)
    first = torch.stack([a[i][0] for i in range(20)])
    assert torch.equal(first, torch.stack([b[i][0] for i in range(20)]))
    a.set_epoch(1)
    assert not torch.equal(first, torch.stack([a[i][0] for i in range(20)]))
    a.set_epoch(0)
    assert torch.equal(first, torch.stack([a[i][0] for i in range(20)]))


def test_batch_indexing_equals_items(base):
    train, info = base
    aug = RandomCropFlip(train, padding=4, fill=info.raw_zero, seed=2)
    idx = [5, 0, 17, 5, 39]
    images, targets = aug[idx]
    assert torch.equal(images, torch.stack([aug[i][0] for i in idx]))
    assert torch.equal(targets, torch.stack([aug[i][1] for i in idx]))
    assert torch.equal(aug[torch.tensor(idx)][0], images)


def test_no_flip_and_no_padding_is_identity(base):
    train, _ = base
    same = RandomCropFlip(train, padding=0, flip=False)
    assert all(torch.equal(same[i][0], train[i][0]) for i in range(10))


def test_get_datasets_wraps_only_the_train_split(base):
    train, test, _ = get_datasets("mnist5k", subset=(40, 10), augment=True, seed=3)
    assert isinstance(train, RandomCropFlip) and not train.flip and not isinstance(test, RandomCropFlip)


def test_validation(base):
    train, _ = base
    for kw, arg in [({"padding": -1}, "padding"), ({"seed": 1.5}, "seed")]:
        with pytest.raises(ValueError, match=arg):
            RandomCropFlip(train, **kw)
    with pytest.raises(ValueError, match="epoch"):
        RandomCropFlip(train).set_epoch(-1)
