"""sparsefw: compression-aware training with Stochastic Frank-Wolfe (SparseFW)."""
import importlib

from .assign import constrain
from .optim import SFW

__version__ = "0.1.0"
__all__ = ["SFW", "constrain"]

_SUBPACKAGES = {"constraints", "optim", "compress", "models", "data", "experiments", "cli", "radii", "assign"}


def __getattr__(name: str):
    """Import subpackages on first attribute access: `sparsefw.compress.prune(...)` works after
    a bare `import sparsefw` without importing every layer up front."""
    if name in _SUBPACKAGES:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
