"""Interleaved wall-clock medians: every callable runs once per round, rounds rotate the order."""
from __future__ import annotations

import math
import statistics
import time
from typing import Any, Callable


def interleaved_medians(fns: dict[str, Callable[[], Any]], repeats: int,
                        min_sample_s: float = 0.01, max_inner: int = 50) -> dict[str, float]:
    """Median seconds per call of every callable.

    Each callable is warmed up once (a warm-up lasting ≥ `min_sample_s` gives n = 1) or else timed
    once more to choose an inner count n with n calls lasting ≥ `min_sample_s` (at most
    `max_inner`); then `repeats` rounds time n calls of each callable in turn, starting each round
    one callable later, so slow drifts of the machine hit all alike.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be ≥ 1, got repeats={repeats!r}")
    inner = {}
    for name, fn in fns.items():
        start = time.perf_counter()
        fn()
        once = time.perf_counter() - start
        if once < min_sample_s:
            start = time.perf_counter()
            fn()
            once = time.perf_counter() - start
        inner[name] = max(1, min(max_inner, math.ceil(min_sample_s / max(once, 1e-7))))
    names = list(fns)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            n, fn = inner[name], fns[name]
            start = time.perf_counter()
            for _ in range(n):
                fn()
            samples[name].append((time.perf_counter() - start) / n)
    return {name: statistics.median(s) for name, s in samples.items()}
