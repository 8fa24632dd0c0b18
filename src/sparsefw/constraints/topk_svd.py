"""Top-k singular triplets of a matrix without a full SVD, deterministic.

Method (chosen by measurement: BENCHMARKS.md "topk_svd", a dated record of the retired
benchmarks/bench_topk_svd.py; last version `git show ead9056:benchmarks/bench_cost.py`, variant topk-svd):
eigendecomposition of the Gram matrix on the short side. For M (m × p, m ≤ p, else work on Mᵀ):

    G = M Mᵀ (m × m),  U_k = eigenvectors of G for its k largest eigenvalues,
    B = U_kᵀ M = Σ_k V_kᵀ,  best rank-k approximation [M]_k = U_k B,  ‖Σ_k‖₂ = ‖B‖_F.

Any orthonormal U_k yields a rank-k matrix U_k B with ‖U_k B‖_F = ‖U_kᵀM‖_F ≤ ‖Σ_k‖₂, so the
rounding of G (float32 squares the condition number) only misplaces directions that carry
~eps·σ₁² of energy: the LMO value stays accurate to working precision.

Measured (BENCHMARKS.md "topk_svd"; shapes 64×576 … 640×5760 and 2048×512, Gaussian and 1/√i
spectra, k = 1, 10 %, 30 % of the rank; tests add geometric-to-1e-6, rank-deficient, near-tied):
float32 inputs: relative shortfall of the LMO value vs float64 torch.linalg.svd ≤ 1e-9, relative
error of ‖Σ_k‖₂ ≤ 4e-7 (tests allow 1e-6 / 2e-6); float64 inputs: both ≤ 1e-12. Typically 7–16× faster
than torch.linalg.svd at 2 CPU threads. Seeded randomized methods (subspace iteration with
q = k + 10 and 4 power iterations, torch.svd_lowrank) miss 2–8 % of ‖Σ_k‖ on flat spectra and
are slower for k ≥ 10 % of the rank. Gram-eigh is as fast as the full SVD even on 4×36, so
only matrices whose short side is ≤ EXACT_MAX_SHORT_SIDE use torch.linalg.svd (exact σ there).

Both functions take a matrix (m × p) or a stack of them (…, m × p; batched eigh/svd/matmul).
`best_rank_k` (the LMO's need) stops at U_k B; `top_k_svd` adds a small SVD of B (k × p) so that
U_k and V_k are orthonormal even where σ ≈ 0. No randomness: on CPU the same input gives
bitwise the same output.
"""
from __future__ import annotations

import torch

from ._ops import l2, working

#: short side up to which a full torch.linalg.svd is used (it is as fast as Gram-eigh there)
EXACT_MAX_SHORT_SIDE = 8


def tall(mats: torch.Tensor) -> torch.Tensor:
    """(…, m, p) matrices as tall ones (rows ≥ columns): transposed where m < p. Same singular
    values; LAPACK's SVD of a wide c_out × c_in·kh·kw matrix is several times slower than of its
    transpose (benchmarks/bench_cost.py)."""
    return mats.mT if mats.shape[-2] < mats.shape[-1] else mats


def _left_factors(M: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(U_k, B) with orthonormal U_k (…, m × k) spanning the top-k left singular subspace and
    B = U_kᵀM (…, k × p), for m ≤ p; columns in no particular order.

    The subnormal entries of G are set to 0 (a change below 2^−126 per entry, against ‖G‖ ≥ ¼ for
    the regions' normalised M): float32 eigh has returned NaN on a G holding subnormals (issue 23),
    and LAPACK raises LinAlgError ("failed to converge") on some ill-conditioned G and M. Where the
    fast path raises or U_k is not finite the factors come from float64 (`_float64_left_factors`).
    The check reads one flag (linalg.eigh and linalg.svd synchronise on CUDA anyway)."""
    try:
        if M.shape[-2] <= EXACT_MAX_SHORT_SIDE:
            U, S, Vh = torch.linalg.svd(M, full_matrices=False)
            U, B = U[..., :k], S[..., :k, None] * Vh[..., :k, :]
        else:
            U = _gram_eigenvectors(M, k)
            B = U.mT @ M
        if bool(torch.isfinite(U).all()):
            return U, B
    except torch.linalg.LinAlgError:
        pass
    return _float64_left_factors(M, k)


def _gram_eigenvectors(M: torch.Tensor, k: int) -> torch.Tensor:
    """The eigenvectors of the k largest eigenvalues of G = MMᵀ (ascending: U_k B and ‖B‖_F do not
    depend on the order; `top_k_svd` sorts), subnormal entries of G set to 0."""
    G = M @ M.mT
    return torch.linalg.eigh(torch.where(G.abs() < torch.finfo(G.dtype).tiny, 0.0, G))[1][..., -k:]


def _float64_left_factors(M: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`_left_factors` in float64: an SVD of M, or where LAPACK's SVD does not converge, the Gram
    eigenvectors (a different algorithm: they fail on different matrices), cast back to M's dtype."""
    M64 = M.double()
    try:
        U, S, Vh = torch.linalg.svd(M64, full_matrices=False)
        U, B = U[..., :k], S[..., :k, None] * Vh[..., :k, :]
    except torch.linalg.LinAlgError:
        U = _gram_eigenvectors(M64, k)
        B = U.mT @ M64
    return U.to(M.dtype), B.to(M.dtype)


def _check(M: torch.Tensor, k: int) -> None:
    if not isinstance(M, torch.Tensor) or M.ndim < 2:
        raise ValueError(f"M must be a matrix or a stack of matrices (≥ 2-D tensor), got "
                         f"{getattr(M, 'shape', type(M).__name__)}")
    rank = min(M.shape[-2:])
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= rank:
        raise ValueError(f"k must be an int in [1, {rank}] for {tuple(M.shape)} matrices, got k={k!r}")


def best_rank_k(M: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """([M]_k, ‖Σ_k‖₂): the best rank-k approximation of M and its Frobenius norm (per matrix of a stack)."""
    _check(M, k)
    if working(M, "M") is not M:  # half / bfloat16: compute in float32
        return tuple(t.to(M.dtype) for t in best_rank_k(working(M, "M"), k))
    if M.shape[-2] > M.shape[-1]:
        approx_t, size = best_rank_k(M.mT, k)
        return approx_t.mT, size
    U, B = _left_factors(M, k)
    return U @ B, l2(B, dim=(-2, -1))


def best_rank_k_warm(M: torch.Tensor, k: int, basis: torch.Tensor | None
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """([M]_k ≈ P_U M, ‖P_U M‖_F, U): one step of subspace iteration on M (…, m × p) from last step's
    orthonormal `basis` (…, s × k, s = min(m, p): the short side) — U = QR(M̃ M̃ᵀ basis), M̃ = M, or
    Mᵀ when M is tall — and the projection of M on span U: with Z = M̃ᵀU, P_U M̃ = U Zᵀ and
    ‖P_U M̃‖_F = ‖Z‖_F. Four matrix products of s·k·p (and a QR of s × k), against Gram-eigh's
    s²·p product, a full s × s eigendecomposition and two s·k·p products.
    `basis=None` gives the exact answer of `best_rank_k` and its basis U_k (the refresh).
    P_U M is always a rank-≤k matrix with ‖P_U M‖_F ≤ ‖Σ_k‖₂: an inexact but feasible direction whose
    shortfall 1 − ‖P_U M‖_F/‖Σ_k‖₂ shrinks geometrically while M changes slowly (momentum)."""
    _check(M, k)
    if working(M, "M") is not M:
        approx, size, basis = best_rank_k_warm(working(M, "M"), k, basis)
        return approx.to(M.dtype), size.to(M.dtype), basis
    tall_input = M.shape[-2] > M.shape[-1]
    wide = M.mT if tall_input else M
    if basis is None:
        U, B = _left_factors(wide, k)
        approx, size, new_basis = U @ B, l2(B, dim=(-2, -1)), U
    else:
        new_basis = torch.linalg.qr(wide @ (wide.mT @ basis.to(wide.dtype))).Q
        Z = wide.mT @ new_basis
        approx, size = new_basis @ Z.mT, l2(Z, dim=(-2, -1))
    return (approx.mT if tall_input else approx), size, new_basis


def top_k_svd(M: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(U_k, σ_k, V_kᵀ): the k leading singular triplets, σ descending, U_k and V_k orthonormal.

    A small SVD of B = U_kᵀM (k × p) rotates U_k and gives V_k orthonormal even where σ ≈ 0
    (the LMO needs only `best_rank_k`, which skips it).
    """
    _check(M, k)
    if working(M, "M") is not M:  # half / bfloat16: compute in float32
        return tuple(t.to(M.dtype) for t in top_k_svd(working(M, "M"), k))
    if M.shape[-2] > M.shape[-1]:
        V, S, Uh = top_k_svd(M.mT, k)
        return Uh.mT, S, V.mT
    U, B = _left_factors(M, k)
    rotation, S, Vh = torch.linalg.svd(B, full_matrices=False)
    return U @ rotation, S, Vh
