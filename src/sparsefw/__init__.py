"""sparsefw: compression-aware training with Stochastic Frank-Wolfe (SparseFW)."""
__version__ = "0.1.0"
