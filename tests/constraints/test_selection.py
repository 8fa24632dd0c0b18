"""O(n) selection of the k-th largest value (`_ops.kth_largest_rows`, sampling path on large CPU rows)
against brute force (numpy's full sort), and the k-support LMO mask it feeds against the topk-based
definition — ties, zeros, stride-aligned patterns and every fallback included."""
import numpy as np
import pytest
import torch

from sparsefw.constraints import KSupportBall, _ops
from sparsefw.constraints._ops import SELECT_MIN_ENTRIES, kth_largest_rows, top_k_mask_rows

N = SELECT_MIN_ENTRIES + 123   # just above the sampling threshold


def _rows(kind, gen):
    if kind == "gaussian":
        return torch.randn(2, N, generator=gen).abs()
    if kind == "ties":           # few distinct values: the band swells with ties (fallback)
        return torch.randint(0, 7, (2, N), generator=gen).float()
    if kind == "mostly_zero":    # sparse gradient: 95 % zeros
        a = torch.randn(2, N, generator=gen).abs()
        return torch.where(torch.rand(2, N, generator=gen) < 0.95, 0.0, a)
    if kind == "strided":        # large values exactly on the sample's stride: a biased sample
        a = torch.rand(2, N, generator=gen)
        a[:, ::N // _ops.SELECT_SAMPLE] += 10.0
        return a
    if kind == "float64_near_ties":
        return (1.0 + 1e-12 * torch.randint(0, 1000, (2, N), generator=gen)).double()
    raise ValueError(kind)


def _brute_kth(a, k):
    return np.sort(a.numpy(), axis=1)[:, ::-1][:, k - 1]


@pytest.mark.parametrize("kind", ["gaussian", "ties", "mostly_zero", "strided", "float64_near_ties"])
@pytest.mark.parametrize("share", [1e-4, 0.01, 0.1, 0.5, 0.97])
def test_kth_largest_equals_brute_force(kind, share):
    gen = torch.Generator().manual_seed(hash((kind, share)) % 2 ** 31)
    a = _rows(kind, gen)
    k = max(1, int(share * N))
    got = kth_largest_rows(a, k)
    assert got.shape == (2, 1) and got.dtype == a.dtype
    np.testing.assert_array_equal(got[:, 0].numpy(), _brute_kth(a, k))


@pytest.mark.parametrize("kind", ["gaussian", "ties", "mostly_zero", "strided"])
def test_top_k_mask_equals_the_topk_definition_ties_to_the_lowest_index(kind):
    gen = torch.Generator().manual_seed(7)
    a = _rows(kind, gen)
    k = N // 10
    mask = top_k_mask_rows(a, k)
    assert (mask.sum(1) == k).all()
    for row, m in zip(a.numpy(), mask.numpy()):
        order = np.lexsort((np.arange(N), -row))      # value descending, then index ascending
        expected = np.zeros(N, dtype=bool)
        expected[order[:k]] = True
        np.testing.assert_array_equal(m, expected)


def test_k_support_lmo_on_a_large_tensor_matches_its_definition():
    gen = torch.Generator().manual_seed(3)
    d = torch.randint(-3, 4, (4, N // 4 + 1), generator=gen).float()   # many ties
    c = KSupportBall(d.shape, k=0.1, radius=2.0)
    v = c.lmo(d)
    flat, k = d.reshape(-1).numpy(), c.k
    order = np.lexsort((np.arange(flat.size), -np.abs(flat)))
    keep = np.zeros(flat.size, dtype=bool)
    keep[order[:k]] = True
    m_k = np.where(keep, flat, 0.0)
    expected = -2.0 * m_k / np.linalg.norm(m_k)
    np.testing.assert_allclose(v.reshape(-1).numpy(), expected, rtol=1e-6, atol=1e-7)
    assert np.array_equal(v.reshape(-1).numpy() != 0, keep)


def test_sampling_path_selects_from_a_small_band(monkeypatch):
    """On a plain Gaussian row the exact top-k runs on a band of a few % of the row, not on the row."""
    sizes = []
    topk = torch.topk

    def recording_topk(x, k, *args, **kwargs):
        sizes.append(x.numel())
        return topk(x, k, *args, **kwargs)

    monkeypatch.setattr(torch, "topk", recording_topk)
    a = torch.randn(1, 4 * N, generator=torch.Generator().manual_seed(0)).abs()
    kth_largest_rows(a, (4 * N) // 10)
    assert len(sizes) == 1 and sizes[0] < 0.1 * a.numel()
