"""sparsefw: compression-aware training with Stochastic Frank-Wolfe (SparseFW).

    import sparsefw
    groups = sparsefw.constrain(model, "k_support", k=0.1, width=10.0)
    opt = sparsefw.SFW(groups, lr=0.1)
    small = sparsefw.compress.prune(model, sparsity=0.9)
    model = sparsefw.load_compressed("runs/x/sfw/compressed/filters_0.5")   # from its folder alone

Everything is imported on first use, so `import sparsefw` does not import torch: the command line
(`sparsefw.cli`) can still set OMP_WAIT_POLICY, which OpenMP reads once, when torch loads it.
"""
import importlib

__version__ = "0.1.0"
__all__ = ["SFW", "constrain", "load_compressed"]

_SUBPACKAGES = {"constraints", "graph", "optim", "compress", "models", "data", "experiments", "cli", "radii", "assign"}
_NAMES = {"SFW": "optim", "constrain": "assign", "load_compressed": "experiments.compression"}


def __getattr__(name: str):
    """Subpackages and the public names on first attribute access: `sparsefw.compress.prune(...)`
    works after a bare `import sparsefw` without importing every layer up front."""
    if name in _SUBPACKAGES:
        return importlib.import_module(f".{name}", __name__)
    if name in _NAMES:
        return getattr(importlib.import_module(f".{_NAMES[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__, *_SUBPACKAGES})
