"""Independent truths for the constraint tests: brute force over supports, numpy SVD, cvxpy.

Nothing here calls sparsefw; every quantity is computed from its definition.
"""
from __future__ import annotations

import itertools

import cvxpy as cp
import numpy as np


def max_l2_over_subsets(values: np.ndarray, k: int) -> float:
    """max over k-subsets S of ‖values_S‖₂ (brute force): dual of the k-support norm."""
    return max(np.linalg.norm(values[list(S)]) for S in itertools.combinations(range(len(values)), k))


def ksparse_vertices(n: int, k: int, radius: float) -> np.ndarray:
    """All vertices of the K-sparse polytope in R^n: k entries ±radius, the rest 0 (one per row)."""
    rows = []
    for S in itertools.combinations(range(n), k):
        for signs in itertools.product((-1.0, 1.0), repeat=k):
            v = np.zeros(n)
            v[list(S)] = radius * np.array(signs)
            rows.append(v)
    return np.array(rows)


def group_dual_brute(d: np.ndarray, k: int) -> float:
    """max over k-subsets of filters (dim 0) of the Frobenius norm of d restricted to them."""
    filters = d.reshape(d.shape[0], -1)
    return max(np.linalg.norm(filters[list(S)]) for S in itertools.combinations(range(d.shape[0]), k))


def spectral_dual(d: np.ndarray, k: int) -> float:
    """‖σ_1..k‖₂ of the matrix view, from a full numpy SVD."""
    s = np.linalg.svd(d.reshape(d.shape[0], -1), compute_uv=False)
    return float(np.linalg.norm(s[:k]))


def k_support_norm_cvxpy(x: np.ndarray, k: int) -> float:
    """Gauge of conv{v : ‖v‖₀ ≤ k, ‖v‖₂ ≤ 1} at the vector x:
    min Σ_S ‖z_S‖₂ over x = Σ_S z_S with supp z_S ⊆ S, S ranging over all k-subsets."""
    n = len(x)
    supports = list(itertools.combinations(range(n), k))
    parts = [cp.Variable(k) for _ in supports]
    total = [0] * n
    for S, z in zip(supports, parts):
        for j, i in enumerate(S):
            total[i] = total[i] + z[j]
    problem = cp.Problem(cp.Minimize(sum(cp.norm(z, 2) for z in parts)), [total[i] == x[i] for i in range(n)])
    problem.solve(solver=cp.CLARABEL)
    return float(problem.value)


def group_k_support_norm_cvxpy(x: np.ndarray, k: int) -> float:
    """Gauge of conv{V : ≤ k nonzero filters, ‖V‖_F ≤ 1}: min Σ_S ‖Z_S‖_F over X = Σ_S Z_S
    with Z_S zero outside the filters S."""
    X = x.reshape(x.shape[0], -1)
    f, width = X.shape
    supports = list(itertools.combinations(range(f), k))
    parts = [cp.Variable((k, width)) for _ in supports]
    constraints = []
    for i in range(f):
        pieces = [Z[S.index(i)] for S, Z in zip(supports, parts) if i in S]
        constraints.append(sum(pieces) == X[i])
    problem = cp.Problem(cp.Minimize(sum(cp.norm(Z, "fro") for Z in parts)), constraints)
    problem.solve(solver=cp.CLARABEL)
    return float(problem.value)
