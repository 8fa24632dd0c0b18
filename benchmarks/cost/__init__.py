"""Helpers of `benchmarks/bench_cost.py`: the compared methods, the layer shapes, interleaved timing."""
