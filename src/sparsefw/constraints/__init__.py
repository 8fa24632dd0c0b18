"""Feasible regions, their norms and linear minimisation oracles (pure maths, no nn)."""
from .base import Constraint, constraint_from_spec, resolve_k
from .batched import lmos
from .coupled import CoupledGroupKSupportBall
from .ksparse import KSparsePolytope
from .ksupport import GroupKSupportBall, KSupportBall
from .lp_balls import L1Ball, L2Ball, LinfBall, LpBall
from .nm import NMKSupportBall, parse_pattern
from .operator import SpectralBall, SpectralPolytope
from .spectral import NuclearBall, SpectralKSupportBall
from .topk_svd import best_rank_k, best_rank_k_warm, top_k_svd

__all__ = [
    "Constraint", "constraint_from_spec", "resolve_k",
    "L1Ball", "L2Ball", "LinfBall", "LpBall", "KSparsePolytope", "KSupportBall", "GroupKSupportBall",
    "CoupledGroupKSupportBall", "NMKSupportBall", "parse_pattern",
    "NuclearBall", "SpectralKSupportBall", "SpectralBall", "SpectralPolytope", "best_rank_k", "best_rank_k_warm",
    "top_k_svd", "lmos",
]
