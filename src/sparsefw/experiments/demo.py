"""`sparsefw demo`: SparseFW (k-support, group-k-support, spectral-k-support) and SGD with weight decay
on the built-in MNIST digits, every model compressed at every level, one table and one plot.

Uses the packaged config `demo.yaml`. Runs already in the output directory with the same config
are continued (finished ones are not retrained), so running the demo twice reprints the table.
"""
from __future__ import annotations

import time
from pathlib import Path

from .report import write_report
from .runs import plan_runs
from .sweep import sweep_run
from .train import train


def run_demo(out: str | Path = "runs/demo", overrides: list[str] = (), progress: bool = True) -> dict:
    """Train, sweep and report; returns {"table", "files", "runs", "seconds"}."""
    start = time.perf_counter()
    plans = plan_runs("demo", overrides, out=out, resume=True)
    for plan in plans:
        train(plan.config, plan.out_dir, resume=plan.resume)
    for plan in plans:
        sweep_run(plan.out_dir, progress=progress)
    table, files = write_report([p.out_dir for p in plans], out)
    return {"table": table, "files": files, "runs": [p.out_dir for p in plans],
            "seconds": time.perf_counter() - start}
