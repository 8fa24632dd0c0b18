"""Feasible regions, their norms and linear minimisation oracles (pure maths, no nn)."""
from .base import Constraint, constraint_from_spec, resolve_k

__all__ = ["Constraint", "constraint_from_spec", "resolve_k"]
