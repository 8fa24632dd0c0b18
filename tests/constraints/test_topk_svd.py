"""Top-k singular triplets (Gram-eigh path and the exact small path) against torch.linalg.svd.

Documented accuracy (topk_svd docstring): float32 relative error of ‖Σ_k‖ ≤ 3e-7 and LMO-value
shortfall ≤ 4e-8 on the benchmark matrices; the tests allow 2e-6 / 1e-6 (float32) and 1e-12
(float64) on smaller, harder cases.
"""
from __future__ import annotations

import pytest
import torch

from sparsefw.constraints import SpectralKSupportBall, best_rank_k, top_k_svd
from sparsefw.constraints.topk_svd import EXACT_MAX_SHORT_SIDE


def _with_spectrum(m, p, sigma, seed):
    gen = torch.Generator().manual_seed(seed)
    U = torch.linalg.qr(torch.randn(m, len(sigma), generator=gen, dtype=torch.float64)).Q
    V = torch.linalg.qr(torch.randn(p, len(sigma), generator=gen, dtype=torch.float64)).Q
    return (U * sigma) @ V.mT


def _spectra(r):
    i = torch.arange(r, dtype=torch.float64)
    return {
        "gaussian-like flat": None,
        "slow decay 1/sqrt(i)": 1 / (i + 1).sqrt(),
        "geometric to 1e-6": 10 ** (-6 * i / r),
        "near ties": 1 - 1e-7 * i,
        "rank 5": torch.where(i < 5, 1.0 + i, 0.0),
    }


@pytest.mark.parametrize("dtype,tol_sigma,tol_value", [(torch.float32, 2e-6, 1e-6), (torch.float64, 1e-12, 1e-12)])
@pytest.mark.parametrize("m,p", [(40, 150), (150, 40), (8, 30)])  # (8, 30): the exact path
def test_accuracy_against_full_svd(m, p, dtype, tol_sigma, tol_value):
    r = min(m, p)
    for name, sigma in _spectra(r).items():
        M64 = (torch.randn(m, p, generator=torch.Generator().manual_seed(7), dtype=torch.float64) if sigma is None
               else _with_spectrum(m, p, sigma, seed=8))
        M = M64.to(dtype)
        exact = torch.linalg.svdvals(M.double())
        for k in sorted({1, max(1, r // 10), int(0.3 * r), r}):
            U, S, Vh = top_k_svd(M, k)
            assert U.dtype == S.dtype == Vh.dtype == dtype and U.shape == (m, k) and Vh.shape == (k, p)
            ref = torch.linalg.vector_norm(exact[:k])
            assert abs(torch.linalg.vector_norm(S.double()) - ref) <= tol_sigma * ref, (name, k)
            assert torch.all(S[:-1] >= S[1:]), (name, k)
            for Q in (U, Vh.mT):
                torch.testing.assert_close(Q.mT.double() @ Q.double(), torch.eye(k, dtype=torch.float64),
                                           atol=1e-5 if dtype == torch.float32 else 1e-12, rtol=0)
            approx, size = best_rank_k(M, k)
            value = (M.double() * approx.double()).sum() / size.double()
            assert value >= ref * (1 - tol_value), (name, k)  # LMO value shortfall
            torch.testing.assert_close(((U * S) @ Vh).double(), approx.double(), atol=1e-5 * float(exact[0]), rtol=0)


def test_best_rank_k_matches_truncated_svd_when_there_is_a_gap():
    sigma = torch.tensor([9.0, 7.0, 5.0, 1.0, 0.5, 0.25] + [0.1] * 24, dtype=torch.float64)
    M = _with_spectrum(30, 70, sigma, seed=2)
    U, S, Vh = torch.linalg.svd(M, full_matrices=False)
    for k in (1, 3, 5):
        approx, size = best_rank_k(M, k)
        torch.testing.assert_close(approx, (U[:, :k] * S[:k]) @ Vh[:k], rtol=0, atol=1e-12)
        assert float(size) == pytest.approx(float(torch.linalg.vector_norm(S[:k])), rel=1e-13)


def test_rank_deficient_and_zero_matrices_give_finite_results():
    M = _with_spectrum(20, 50, torch.tensor([3.0, 1.0], dtype=torch.float64), seed=1)
    U, S, Vh = top_k_svd(M, 6)
    assert torch.isfinite(U).all() and torch.isfinite(Vh).all()
    torch.testing.assert_close(S[:2], torch.tensor([3.0, 1.0], dtype=torch.float64))
    assert torch.all(S[2:] < 1e-6)
    approx, size = best_rank_k(torch.zeros(20, 50), 4)
    assert torch.equal(approx, torch.zeros(20, 50)) and float(size) == 0.0
    v = SpectralKSupportBall((20, 50), k=4, radius=1.0).lmo(torch.zeros(20, 50))
    assert torch.equal(v, torch.zeros(20, 50))


def test_bitwise_deterministic_on_a_large_matrix():
    gen = torch.Generator().manual_seed(0)
    M = torch.randn(256, 1152, generator=gen) @ torch.diag(torch.linspace(1, 0.01, 1152)) + 0.0
    c = SpectralKSupportBall((256, 128, 3, 3), k=0.3, radius=2.0)
    first = c.lmo(M.reshape(256, 128, 3, 3))
    for _ in range(2):
        assert torch.equal(c.lmo(M.reshape(256, 128, 3, 3).clone()), first)
    a, b = top_k_svd(M.T, 20), top_k_svd(M.T.contiguous(), 20)
    assert all(torch.equal(x, y) for x, y in zip(a, b))


def test_exact_path_below_threshold_equals_torch_svd():
    M = torch.randn(EXACT_MAX_SHORT_SIDE, 40, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    U, S, Vh = torch.linalg.svd(M, full_matrices=False)
    u, s, vh = top_k_svd(M, 4)
    torch.testing.assert_close(s, S[:4])
    torch.testing.assert_close((u * s) @ vh, (U[:, :4] * S[:4]) @ Vh[:4])


def test_low_precision_inputs_are_computed_in_float32():
    M = torch.randn(30, 50, generator=torch.Generator().manual_seed(4))
    for dtype in (torch.float16, torch.bfloat16):
        U, S, Vh = top_k_svd(M.to(dtype), 3)
        approx, size = best_rank_k(M.to(dtype), 3)
        assert U.dtype == S.dtype == Vh.dtype == approx.dtype == size.dtype == dtype
        exact = torch.linalg.svdvals(M.to(dtype).double())[:3]
        torch.testing.assert_close(S.double(), exact, rtol=1e-2, atol=0)
    with pytest.raises(ValueError, match="floating-point"):
        top_k_svd(torch.ones(3, 4, dtype=torch.int32), 1)
