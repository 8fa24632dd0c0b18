"""Top-k singular triplets: candidates vs torch.linalg.svd, time and accuracy.

    python benchmarks/bench_topk_svd.py

Times are medians of interleaved repeats in one process (2 torch threads). Errors are against
float64 singular values: "‖Σ_k‖ err" = |‖σ̂_k‖ − ‖σ_k‖| / ‖σ_k‖, "LMO err" = 1 − ⟨M, P⟩/(‖P‖_F‖σ_k‖)
for the returned rank-k matrix P (the relative shortfall of the LMO value); times include forming P.
Writes the "topk_svd" section of BENCHMARKS.md.
"""
from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path

# Idle OpenMP threads sleep instead of spinning: on a shared CPU, spinning makes the
# multi-threaded LAPACK SVD 10-20x slower (measured 13.6 s vs 0.84 s for 512x4608) and the
# comparison meaningless. Must be set before torch loads its OpenMP runtime.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _report  # noqa: E402

from sparsefw.constraints.topk_svd import best_rank_k, top_k_svd  # noqa: E402

SEED = 0


def as_approximation(U, S, Vh):
    """(rank-k matrix P = U diag(S) Vᵀ, claimed ‖Σ_k‖₂) — what the LMO consumes."""
    return (U * S) @ Vh, torch.linalg.vector_norm(S)


def full_svd(M, k):
    U, S, Vh = torch.linalg.svd(M, full_matrices=False)
    return as_approximation(U[:, :k], S[:k], Vh[:k])


def subspace_iteration(M, k, power_iters, oversample=10):
    """Seeded randomized subspace iteration (Halko et al. 2011, Alg. 4.4) with QR each half-step."""
    if M.shape[0] > M.shape[1]:
        approx_t, size = subspace_iteration(M.mT, k, power_iters, oversample)
        return approx_t.mT, size
    width = min(k + oversample, M.shape[0])
    gen = torch.Generator(device=M.device).manual_seed(SEED)
    Q = torch.linalg.qr(M @ torch.randn(M.shape[1], width, generator=gen, device=M.device, dtype=M.dtype)).Q
    for _ in range(power_iters):
        Q = torch.linalg.qr(M @ torch.linalg.qr(M.mT @ Q).Q).Q
    Ub, S, Vh = torch.linalg.svd(Q.mT @ M, full_matrices=False)
    return as_approximation(Q @ Ub[:, :k], S[:k], Vh[:k])


def svd_lowrank_seeded(M, k, oversample=10):
    """torch.svd_lowrank takes no generator: seed the global RNG inside fork_rng."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        U, S, V = torch.svd_lowrank(M, q=min(k + oversample, min(M.shape)), niter=2)
    return as_approximation(U[:, :k], S[:k], V[:, :k].mT)


def gram_eigh_no_threshold(M, k):
    """The Gram-eigh path even on matrices below EXACT_MAX_SHORT_SIDE (for choosing it)."""
    U = torch.linalg.eigh(M @ M.mT).eigenvectors[:, -k:].flip(1)
    B = U.mT @ M
    return U @ B, torch.linalg.vector_norm(B)


CANDIDATES = {
    "best_rank_k: Gram-eigh f32 (chosen)": best_rank_k,
    "top_k_svd: + SVD of B": lambda M, k: as_approximation(*top_k_svd(M, k)),
    "Gram-eigh f64": lambda M, k: best_rank_k(M.double(), k),
    "subspace it. q=k+10, 4 it.": lambda M, k: subspace_iteration(M, k, 4),
    "svd_lowrank q=k+10, 2 it.": svd_lowrank_seeded,
}


def matrix(m, p, spectrum, gen):
    if spectrum == "gaussian":
        return torch.randn(m, p, generator=gen)
    r = min(m, p)
    U = torch.linalg.qr(torch.randn(m, r, generator=gen, dtype=torch.float64)).Q
    V = torch.linalg.qr(torch.randn(p, r, generator=gen, dtype=torch.float64)).Q
    sigma = 1 / torch.arange(1, r + 1, dtype=torch.float64).sqrt()
    return ((U * sigma) @ V.mT).float()


def errors(M, k, result):
    exact = torch.linalg.vector_norm(torch.linalg.svdvals(M.double())[:k])
    approx, size = (t.double() for t in result)
    sigma_err = abs(size - exact) / exact
    lmo_err = 1 - (M.double() * approx).sum() / (torch.linalg.vector_norm(approx) * exact)
    return float(sigma_err), float(lmo_err)


def measure(M, k, fns, repeats):
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn(M, k)
            times[name].append(time.perf_counter() - start)
    return {name: (statistics.median(times[name]) * 1e3, *errors(M, k, fns[name](M, k))) for name in fns}


def main():
    torch.set_num_threads(2)
    gen = torch.Generator().manual_seed(SEED)
    names = list(CANDIDATES)
    header = "| shape | spectrum | k | torch.linalg.svd ms | " + " | ".join(f"{n}: ms (×faster, LMO err)" for n in names) + " |"
    rows = [header, "|" + "---|" * (4 + len(names))]
    worst = {n: [0.0, 0.0] for n in names}
    for m, p in [(64, 576), (256, 2304), (512, 4608), (640, 5760), (2048, 512)]:
        rank = min(m, p)
        for spectrum in ("gaussian", "1/sqrt(i)"):
            M = matrix(m, p, spectrum, gen)
            for k in sorted({1, max(1, rank // 10), max(1, int(0.3 * rank))}):
                res = measure(M, k, {"svd": full_svd, **CANDIDATES}, repeats=3)
                svd_ms = res["svd"][0]
                cells = []
                for n in names:
                    ms, s_err, v_err = res[n]
                    worst[n] = [max(worst[n][0], s_err), max(worst[n][1], v_err)]
                    cells.append(f"{ms:.1f} ({svd_ms / ms:.1f}×, {v_err:.0e})")
                rows.append(f"| {m}×{p} | {spectrum} | {k} | {svd_ms:.1f} | " + " | ".join(cells) + " |")
                print(rows[-1], flush=True)
    small = ["| shape | k | torch.linalg.svd ms | gram-eigh ms |", "|---|---|---|---|"]
    for m, p in [(4, 36), (8, 72), (12, 108), (16, 144), (32, 288)]:
        M = matrix(m, p, "gaussian", gen)
        for k in sorted({1, max(1, int(0.3 * m))}):
            res = measure(M, k, {"svd": full_svd, "gram": gram_eigh_no_threshold}, repeats=41)
            small.append(f"| {m}×{p} | {k} | {res['svd'][0]:.3f} | {res['gram'][0]:.3f} |")
    summary = ["| method | max ‖Σ_k‖ err | max LMO err |", "|---|---|---|"]
    summary += [f"| {n} | {w[0]:.1e} | {w[1]:.1e} |" for n, w in worst.items()]
    text = "\n".join([
        "## Top-k SVD for the spectral LMO (`sparsefw.constraints.topk_svd`)",
        "",
        "Command: `python benchmarks/bench_topk_svd.py`  ",
        _report.machine_line(),
        f"OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}; 1-min load average at the end of the run: "
        f"{os.getloadavg()[0]:.1f} (the CPUs are shared with other jobs, so absolute times are noisy).",
        "",
        "float32 matrices; k = 1, 10 % and 30 % of the rank. Medians of 3 "
        "interleaved repeats; times include forming the rank-k matrix. "
        "LMO err = relative shortfall of ⟨M, v⟩ against the exact −τ‖σ_1..k‖₂; "
        "‖Σ_k‖ err = relative error of the returned singular values' norm (vs float64 svdvals).",
        "",
        *rows,
        "",
        "Worst errors over all rows above:",
        "",
        *summary,
        "",
        "Small matrices (41 repeats; decides `EXACT_MAX_SHORT_SIDE`, below which the full SVD is used):",
        "",
        *small,
    ])
    _report.write_section("topk_svd", text)
    print("\n".join(summary + [""] + small))


if __name__ == "__main__":
    main()
