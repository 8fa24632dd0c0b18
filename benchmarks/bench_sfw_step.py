"""Cost of `sparsefw.SFW` relative to `torch.optim.SGD(momentum=0.9)`.

1. One optimizer.step() on the small CNN and on ResNet-20 (random gradients), per region mode, and
   the part of it spent in the LMOs alone.
2. A whole training step (forward + backward + step, batch 128, 32×32×3) on ResNet-20.

All optimizers run side by side in one process, interleaved, torch.set_num_threads(2) (--threads);
medians and minima.
    python benchmarks/bench_sfw_step.py [--repeats 15] [--threads 2]
"""
from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import machine_line, write_section  # noqa: E402

import sparsefw  # noqa: E402
from sparsefw.constraints import lmos  # noqa: E402
from sparsefw.models import build_model  # noqa: E402

MODES = {"k_support": 0.1, "k_sparse": 0.1, "l2": None, "group_k_support": 0.3, "spectral_k_support": 0.3,
         "nuclear": None}
GOALS = {"k_support": 1.10, "group_k_support": 1.10, "spectral_k_support": 1.25}


def _optimizers(model: nn.Module) -> dict[str, tuple[nn.Module, torch.optim.Optimizer]]:
    """SGD and one SFW per mode, each on its own copy of `model`."""
    out = {}
    sgd_model = copy.deepcopy(model)
    out["SGD"] = sgd_model, torch.optim.SGD(sgd_model.parameters(), lr=0.1, momentum=0.9)
    for mode, k in MODES.items():
        m = copy.deepcopy(model)
        out[mode] = m, sparsefw.SFW(sparsefw.constrain(m, mode, k=k, width=10.0), lr=0.1, momentum=0.9)
    return out


def _median_ms(samples: list[float]) -> float:
    return 1e3 * statistics.median(samples)


def bench_optimizer_step(name: str, model: nn.Module, repeats: int, inner: int = 5) -> list[str]:
    opts = _optimizers(model)
    gen = torch.Generator().manual_seed(0)
    for m, _ in opts.values():
        for p in m.parameters():
            p.grad = torch.randn(p.shape, generator=gen) * 1e-2
    times: dict[str, list[float]] = {key: [] for key in opts}
    lmo_times: dict[str, list[float]] = {key: [] for key in MODES}
    batched_times: dict[str, list[float]] = {key: [] for key in MODES}
    for _, opt in opts.values():  # warm-up
        opt.step()
    for _ in range(repeats):
        for key, (_, opt) in opts.items():
            start = time.perf_counter()
            for _ in range(inner):
                opt.step()
            times[key].append((time.perf_counter() - start) / inner)
            if key in MODES:
                directions = [(g["constraint"], opt.state[g["params"][0]]["momentum_buffer"]) for g in opt.param_groups]
                start = time.perf_counter()
                for c, m in directions:
                    c.lmo(m)
                lmo_times[key].append(time.perf_counter() - start)
                start = time.perf_counter()
                lmos(*zip(*directions))
                batched_times[key].append(time.perf_counter() - start)
    sgd, sgd_min = _median_ms(times["SGD"]), 1e3 * min(times["SGD"])
    rows = [f"| {name} | SGD | {sgd:.2f} / {sgd_min:.2f} | – | – | 1.00 / 1.00 | |"]
    for key in MODES:
        t, t_min = _median_ms(times[key]), 1e3 * min(times[key])
        goal = GOALS.get(key)
        verdict = "" if goal is None else f"≤ {goal:.2f}: {'met' if t / sgd <= goal else 'missed'}"
        rows.append(f"| {name} | {key} | {t:.2f} / {t_min:.2f} | {_median_ms(lmo_times[key]):.2f} | "
                    f"{_median_ms(batched_times[key]):.2f} | "
                    f"{t / sgd:.2f} / {t_min / sgd_min:.2f} | {verdict} |")
    return rows


def bench_training_step(repeats: int) -> list[str]:
    model = build_model("resnet20", num_classes=10, in_channels=3, seed=0)
    opts = _optimizers(model)
    gen = torch.Generator().manual_seed(1)
    x, y = torch.randn(128, 3, 32, 32, generator=gen), torch.randint(0, 10, (128,), generator=gen)
    times: dict[str, list[float]] = {key: [] for key in opts}

    def train_step(m: nn.Module, opt: torch.optim.Optimizer) -> None:
        opt.zero_grad()
        nn.functional.cross_entropy(m(x), y).backward()
        opt.step()

    for m, opt in opts.values():
        train_step(m, opt)
    for _ in range(repeats):
        for key, (m, opt) in opts.items():
            start = time.perf_counter()
            train_step(m, opt)
            times[key].append(time.perf_counter() - start)
    sgd, sgd_min = _median_ms(times["SGD"]), min(times["SGD"])
    return [f"| {key} | {_median_ms(times[key]):.1f} / {1e3 * min(times[key]):.1f} | "
            f"{_median_ms(times[key]) / sgd:.3f} / {min(times[key]) / sgd_min:.3f} |" for key in opts]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    step_rows = []
    for name, model in [("cnn (65.8k params)", build_model("cnn", num_classes=10, in_channels=1, seed=0)),
                        ("resnet20 (272k params)", build_model("resnet20", num_classes=10, in_channels=3, seed=0))]:
        step_rows += bench_optimizer_step(name, model, args.repeats)
        print("\n".join(step_rows[-7:]), flush=True)
    train_rows = bench_training_step(max(5, args.repeats // 3))
    print("\n".join(train_rows), flush=True)
    load = os.getloadavg()[1]
    text = "\n".join([
        "## SFW step cost (`benchmarks/bench_sfw_step.py`)",
        "",
        f"Command: `OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'ACTIVE')} python benchmarks/bench_sfw_step.py "
        f"--repeats {args.repeats} --threads {args.threads}`. "
        f"{machine_line()} "
        f"Load average (5 min) at the end of the run: {load:.1f} — with other jobs on the cores, "
        "wall-clock ratios are noisy; rerun on an idle machine for firm numbers.",
        "SFW: lr 0.1, momentum 0.9, rescale 'gradient', width 10, k = 0.1 (k-support, K-sparse) or 0.3 "
        "(group, spectral); SGD: momentum 0.9. Medians of interleaved repeats, random gradients.",
        "",
        "### One optimizer.step()",
        "",
        "Times and ratios are given as median / minimum over the repeats; the LMO columns are the median "
        "times of calling every region's own `lmo` once (one by one), and of the batched "
        "`sparsefw.constraints.lmos` that the step uses.",
        "",
        "| model | optimizer | step (ms) | LMOs, one by one (ms) | LMOs, batched (ms) | ratio to SGD | goal (on the median) |",
        "|---|---|---|---|---|---|---|",
        *step_rows,
        "",
        "### Whole training step on ResNet-20 (forward + backward + step, batch 128, 3×32×32)",
        "",
        "| optimizer | time (ms), median / min | ratio to SGD, median / min |",
        "|---|---|---|",
        *train_rows,
    ])
    write_section("sfw_step", text)


if __name__ == "__main__":
    main()
