"""Small tensor helpers shared by the regions: working precision, accurate norms, deterministic
row-wise top-k masks and the k-support norm (Argyriou, Foygel & Srebro 2012, Prop. 2.1), all
vectorised. The "rows" helpers act on a stack (B, n) of B problems at once (the LMO kernels)."""
from __future__ import annotations

import math

import torch

#: rows of at least this many entries select their k-th largest value by sampling on the CPU
SELECT_MIN_ENTRIES = 2 ** 17
#: entries of the strided sample that brackets the k-th largest value
SELECT_SAMPLE = 4096


def working(t: torch.Tensor, name: str = "d") -> torch.Tensor:
    """t in at least float32 (half/bfloat16 are promoted); float32/float64 are kept as they are."""
    if not t.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got {name}.dtype={t.dtype}")
    return t if t.dtype in (torch.float32, torch.float64) else t.float()


def l2(x: torch.Tensor, dim: int | tuple[int, ...] | None = None) -> torch.Tensor:
    """Euclidean norm as sqrt(Σ x²) with torch's cascade summation (over `dim`, default all).

    torch.linalg.vector_norm and torch._foreach_norm accumulate float32 less carefully on CPU: on
    1M entries they are off by 1e-5 relative (this: 1e-8), enough to push an LMO output outside
    its ball.
    """
    return (x * x).sum().sqrt() if dim is None else (x * x).sum(dim).sqrt()


def normalise_rows(x: torch.Tensor) -> torch.Tensor:
    """x (B, …) with every row multiplied by the power of two 2^−e that brings its max|x| into [½, 1)
    (`normalising_factors`; a zero row stays 0). The LMO kernels run on these rows: every LMO is
    positively homogeneous of degree 0, LMO(c·M) = LMO(M) for c > 0 (argmin_{v∈C} <c·M, v> =
    argmin <M, v>). Afterwards Σx² ≤ n cannot overflow, and squares and products of entries above
    2^−63 are normal (no underflow of tiny directions, which would put an output outside its ball or
    make it NaN). Scaling by a power of two is exact for entries that stay normal, so the kernels'
    outputs are bitwise those of the unscaled rows wherever those neither under- nor overflow."""
    factors = normalising_factors(x.abs().amax(dim=tuple(range(1, x.ndim))), x[0].numel())
    if factors is None:
        return x
    shape = (-1,) + (1,) * (x.ndim - 1)
    return x.mul(factors[0].reshape(shape)).mul_(factors[1].reshape(shape))


def normalising_factors(top: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Two powers of two a = 2^−⌊e/2⌋, b = 2^(⌊e/2⌋−e) per maximum in `top` (float32/float64) of n
    entries, with e its frexp exponent: a·b·max|x| ∈ [½, 1) (e = 0 for a zero max). One factor 2^−e
    would overflow for a subnormal max (2^149 in float32). None on the CPU, where reading the range
    costs nothing, when every max lies in [2^−50, min(2^60, √(max float / 4n))]: there Σx² ≤ n·max²
    cannot overflow, and squares below the normal range (entries under 2^−63) add up to a relative
    error of at most n·2^−48, so such rows are used unscaled."""
    upper = min(2.0 ** 60, math.sqrt(torch.finfo(top.dtype).max / (4 * n)))
    if top.device.type == "cpu" and bool(((top >= 2.0 ** -50) & (top <= upper)).all()):
        return None
    _, exponent = torch.frexp(top)
    half = torch.div(exponent, 2, rounding_mode="floor")
    return power_of_two(-half, top.dtype), power_of_two(half - exponent, top.dtype)


def power_of_two(k: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """2^k exactly for integers k in the normal exponent range of dtype (float32/float64), from its
    bits (torch.ldexp forms 2^k in the default dtype, which overflows for |k| > 127)."""
    bits, bias, mantissa = (torch.int32, 127, 23) if dtype == torch.float32 else (torch.int64, 1023, 52)
    return ((k.to(bits) + bias) << mantissa).view(dtype)


def safe_scale(x: torch.Tensor, numerator: float | torch.Tensor, denominator: torch.Tensor) -> torch.Tensor:
    """x · numerator / denominator, and 0 where the denominator is 0 (never NaN).

    denominator (and a tensor numerator) index the leading dims of x: shape x.shape[:denominator.ndim].
    """
    zero = denominator == 0
    factor = torch.where(zero, 0.0, numerator / torch.where(zero, 1.0, denominator))
    return x * factor.reshape(factor.shape + (1,) * (x.ndim - factor.ndim))


def _kth_largest_by_sampling(row: torch.Tensor, k: int) -> torch.Tensor:
    """The k-th largest entry of a 1-D CPU tensor, exactly, in O(n): a sorted strided sample of
    `SELECT_SAMPLE` entries gives values hi ≥ lo that bracket it (its sample rank ± 4 standard
    deviations of a binomial count); one pass counts c_hi = #{row > hi} and c_lo = #{row ≥ lo}; if
    c_hi < k ≤ c_lo the answer is the (k − c_hi)-th largest of the band lo ≤ row ≤ hi (a few % of
    the row), else — an unlucky sample, or a band swollen by ties — `torch.topk` of the whole row."""
    n = row.numel()
    sample = row[::max(1, n // SELECT_SAMPLE)].sort(descending=True).values
    size, share = sample.numel(), k / n
    spread = int(4 * math.sqrt(size * share * (1 - share))) + 8
    upper, lower = int(share * size) - spread, int(share * size) + spread
    if upper >= 0 and lower < size:
        above, at_least = row > sample[upper], row >= sample[lower]
        c_hi, c_lo = int(torch.count_nonzero(above)), int(torch.count_nonzero(at_least))
        if c_hi < k <= c_lo and c_lo - c_hi <= n // 4:
            band = row.masked_select(at_least ^ above)
            return torch.topk(band, k - c_hi, sorted=False).values.min()
    return torch.topk(row, k, sorted=False).values.min()


def kth_largest_rows(a: torch.Tensor, k: int) -> torch.Tensor:
    """(B, 1): the k-th largest value of every row of a (B, n) — the value `torch.topk` ranks k-th,
    ties counted with multiplicity. CPU rows of ≥ `SELECT_MIN_ENTRIES` entries use
    `_kth_largest_by_sampling` (about 2× faster than topk at 10 % of 0.6M–3.7M entries, see
    BENCHMARKS.md "SFW step cost"); elsewhere (and on other devices, where the counts would be read)
    `torch.topk`."""
    if a.device.type == "cpu" and a.shape[1] >= SELECT_MIN_ENTRIES and k < a.shape[1]:
        return torch.stack([_kth_largest_by_sampling(row, k) for row in a]).unsqueeze(1)
    return torch.topk(a, k, dim=1, sorted=False).values.amin(1, keepdim=True)


def top_k_mask_rows(a: torch.Tensor, k: int) -> torch.Tensor:
    """Boolean mask of the k largest entries of every row of a (B, n); ties go to the lowest index.

    The k-th largest value t of a row (`kth_largest_rows`; its value does not depend on tie order)
    is found first; every entry > t is kept and the first (k − #{a > t}) entries equal to t fill up
    the rest. On the CPU the tie fix (a cumulative count) runs only when some row has more than k
    entries ≥ t; elsewhere it always runs, so that no step waits for the device.
    """
    if k >= a.shape[1]:
        return torch.ones_like(a, dtype=torch.bool)
    t = kth_largest_rows(a, k)
    at_least = a >= t
    if a.device.type == "cpu" and int(torch.count_nonzero(at_least)) == k * a.shape[0]:
        return at_least
    above, tied = a > t, a == t
    missing = k - torch.count_nonzero(above, dim=1).unsqueeze(1)
    return above | (tied & (torch.cumsum(tied, 1) <= missing))


def top_k_mask(a: torch.Tensor, k: int) -> torch.Tensor:
    """`top_k_mask_rows` of the 1-D tensor a."""
    return top_k_mask_rows(a.unsqueeze(0), k).squeeze(0)


def k_support_norm(a: torch.Tensor, k: int) -> torch.Tensor:
    """k-support norm of a 1-D tensor a ≥ 0 (absolute values), Argyriou et al. 2012, Prop. 2.1.

    With z₁ ≥ … ≥ z_k the k largest entries and T_m = Σ_{i ≥ m} z_i (over all entries, 0-based
    rank), for every head length m ∈ {0, …, k−1}

        f(m) = Σ_{i<m} z_i² + T_m² / (k − m)

    is the value of the variational form ‖a‖² = min{Σ a_i²/θ_i : 0 < θ_i ≤ 1, Σθ_i ≤ k} at
    θ = 1 on the head and θ_i ∝ z_i on the tail, feasible iff T_m ≥ (k − m)·z_m. The norm is the
    smallest feasible f(m) (Prop. 2.1's unique r = k − 1 − m attains it); m = k − 1 is always
    feasible. All m are evaluated at once with cumulative sums.
    """
    n = a.numel()
    k = min(k, n)
    z = torch.topk(a, k, sorted=True).values
    rest = torch.where(top_k_mask(a, k), 0.0, a).sum()
    tail = rest + torch.flip(torch.cumsum(torch.flip(z, (0,)), 0), (0,))
    head = torch.cumsum(z * z, 0) - z * z
    count = torch.arange(k, 0, -1, device=a.device, dtype=a.dtype)
    f = head + tail * tail / count
    tol = 64 * torch.finfo(a.dtype).eps
    feasible = tail >= count * z * (1 - tol)
    return torch.sqrt(torch.where(feasible, f, torch.inf).min())


def top_k_l2(a: torch.Tensor, k: int) -> torch.Tensor:
    """‖top-k of a‖₂ for a ≥ 0: the dual of the k-support norm."""
    return l2(torch.topk(a, min(k, a.numel()), sorted=False).values)
