"""Cost of `sparsefw.SFW` relative to `torch.optim.SGD(momentum=0.9)` (issue 17).

CPU (default):
1. One optimizer.step() on the small CNN and on ResNet-20 (random gradients), per region mode, and
   the part of it spent in the LMOs alone; goals ≤ 1.5× SGD (L2), ≤ 2× (k-support, group), ≤ 3×
   (spectral).
2. The k-th largest selection of the k-support LMO (`_ops.kth_largest_rows`) against `torch.topk`
   on WRN-28-10's conv shapes (k = 10 %).
3. Optionally (--training) a whole training step (forward + backward + step, batch 128, 32×32×3) on
   ResNet-20.

GPU (--device cuda; ResNet-18 and WRN-28-10 on 32×32 inputs, batch 128, AMP float16 autocast with
GradScaler): whole training step per optimizer (goal ≤ 1.10× SGD's), whether step() synchronises
(torch.cuda.set_sync_debug_mode("error")), and the CUDA kernels launched by one step, counted
with torch.profiler.

All optimizers run side by side in one process, interleaved; medians (and minima). At one thread
the CPU clock is the thread's CPU time (`time.thread_time`), which other processes on a shared
machine do not inflate; otherwise wall-clock time.

    python benchmarks/bench_sfw_step.py [--repeats 15] [--threads 1] [--training]
    python benchmarks/bench_sfw_step.py --device cuda [--repeats 20]
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
from sparsefw.constraints._ops import kth_largest_rows  # noqa: E402
from sparsefw.models import build_model  # noqa: E402

MODES = {"k_support": 0.1, "k_sparse": 0.1, "l2": None, "group_k_support": 0.3, "spectral_k_support": 0.3,
         "nuclear": None}
GOALS = {"l2": 1.5, "k_support": 2.0, "group_k_support": 2.0, "spectral_k_support": 3.0}
#: WRN-28-10's conv matrices (c_out, c_in, 3, 3) at 10 % (k-support's k)
WRN_SHAPES = [(160, 160, 3, 3), (320, 320, 3, 3), (640, 640, 3, 3), (640, 320, 3, 3)]

clock = time.perf_counter


def _optimizers(model: nn.Module, extra: dict | None = None) -> dict[str, tuple[nn.Module, torch.optim.Optimizer]]:
    """SGD and one SFW per mode (plus `extra` {name: (mode, sfw kwargs)}), each on its own copy of `model`."""
    out = {}
    sgd_model = copy.deepcopy(model)
    out["SGD"] = sgd_model, torch.optim.SGD(sgd_model.parameters(), lr=0.1, momentum=0.9)
    modes = {mode: (mode, {}) for mode in MODES}
    modes.update(extra or {})
    for name, (mode, kwargs) in modes.items():
        m = copy.deepcopy(model)
        out[name] = m, sparsefw.SFW(sparsefw.constrain(m, mode, k=MODES[mode], width=10.0), lr=0.1, momentum=0.9,
                                    **kwargs)
    return out


def _median_ms(samples: list[float]) -> float:
    return 1e3 * statistics.median(samples)


def bench_optimizer_step(name: str, model: nn.Module, repeats: int, inner: int = 5) -> list[str]:
    opts = _optimizers(model, {"spectral_k_support warm": ("spectral_k_support", {"spectral_refresh": 50})})
    gen = torch.Generator().manual_seed(0)
    for m, _ in opts.values():
        for p in m.parameters():
            p.grad = torch.randn(p.shape, generator=gen) * 1e-2
    times: dict[str, list[float]] = {key: [] for key in opts}
    lmo_times: dict[str, list[float]] = {key: [] for key in opts if key != "SGD"}
    batched_times: dict[str, list[float]] = {key: [] for key in opts if key != "SGD"}
    for _, opt in opts.values():  # warm-up
        opt.step()
    for _ in range(repeats):
        for key, (_, opt) in opts.items():
            start = clock()
            for _ in range(inner):
                opt.step()
            times[key].append((clock() - start) / inner)
            if key != "SGD":
                directions = [(g["constraint"], opt.state[g["params"][0]]["momentum_buffer"]) for g in opt.param_groups]
                start = clock()
                for c, m in directions:
                    c.lmo(m)
                lmo_times[key].append(clock() - start)
                start = clock()
                lmos(*zip(*directions))
                batched_times[key].append(clock() - start)
    sgd, sgd_min = _median_ms(times["SGD"]), 1e3 * min(times["SGD"])
    rows = [f"| {name} | SGD | {sgd:.3f} / {sgd_min:.3f} | – | – | 1.00 / 1.00 | |"]
    for key in opts:
        if key == "SGD":
            continue
        t, t_min = _median_ms(times[key]), 1e3 * min(times[key])
        goal = GOALS.get(key)
        verdict = "" if goal is None else f"≤ {goal:.1f}: {'met' if t / sgd <= goal else 'missed'}"
        rows.append(f"| {name} | {key} | {t:.3f} / {t_min:.3f} | {_median_ms(lmo_times[key]):.3f} | "
                    f"{_median_ms(batched_times[key]):.3f} | "
                    f"{t / sgd:.2f} / {t_min / sgd_min:.2f} | {verdict} |")
    return rows


def bench_selection(repeats: int) -> list[str]:
    """k-th largest of |m| at k = 10 %: `kth_largest_rows` (sampling) vs `torch.topk`, and the whole
    k-support LMO; ns per entry."""
    rows = []
    gen = torch.Generator().manual_seed(0)
    for shape in WRN_SHAPES:
        d = torch.randn(shape, generator=gen) * 1e-3
        a = d.abs().reshape(1, -1)
        k = a.shape[1] // 10
        region = sparsefw.constraints.KSupportBall(shape, k=0.1, radius=1.0)
        fns = {"topk": lambda: torch.topk(a, k, dim=1, sorted=False).values.amin(1, keepdim=True),
               "select": lambda: kth_largest_rows(a, k), "lmo": lambda: region.lmo(d)}
        assert torch.equal(fns["topk"](), fns["select"]())
        samples = {key: [] for key in fns}
        for _ in range(repeats):
            for key, fn in fns.items():
                start = clock()
                fn()
                samples[key].append(clock() - start)
        ns = {key: 1e9 * statistics.median(v) / a.numel() for key, v in samples.items()}
        rows.append(f"| {shape[0]}×{shape[1] * 9} ({a.numel() / 1e6:.2f}M) | {ns['topk']:.1f} | {ns['select']:.1f} | "
                    f"{ns['topk'] / ns['select']:.1f}× | {ns['lmo']:.1f} |")
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
            start = clock()
            train_step(m, opt)
            times[key].append(clock() - start)
    sgd, sgd_min = _median_ms(times["SGD"]), min(times["SGD"])
    return [f"| {key} | {_median_ms(times[key]):.1f} / {1e3 * min(times[key]):.1f} | "
            f"{_median_ms(times[key]) / sgd:.3f} / {min(times[key]) / sgd_min:.3f} |" for key in opts]


# ------------------------------------------------------------------------------------------------
# GPU
# ------------------------------------------------------------------------------------------------
def _gpu_model(name: str) -> nn.Module:
    classes = 100 if name == "wrn28_10" else 10
    return build_model(name, num_classes=classes, in_channels=3, seed=0).cuda().to(memory_format=torch.channels_last)


def _kernels_in_step(opt: torch.optim.Optimizer, scaler: torch.amp.GradScaler) -> int:
    """CUDA kernels launched by one scaler.step(opt) (torch.profiler, CUDA activity)."""
    from torch.profiler import ProfilerActivity, profile
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        scaler.step(opt)
        torch.cuda.synchronize()
    return sum(1 for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA)


def _synchronises(opt: torch.optim.Optimizer, scaler: torch.amp.GradScaler) -> str:
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        scaler.step(opt)
        return "no"
    except RuntimeError as err:
        return f"yes ({str(err).splitlines()[0][:60]})"
    finally:
        torch.cuda.set_sync_debug_mode("default")


def bench_gpu(repeats: int) -> list[str]:
    rows = []
    for name in ("resnet18", "wrn28_10"):
        model = _gpu_model(name)
        opts = _optimizers(model, {"spectral_k_support warm": ("spectral_k_support", {"spectral_refresh": 50})})
        gen = torch.Generator(device="cuda").manual_seed(0)
        classes = 100 if name == "wrn28_10" else 10
        x = torch.randn(128, 3, 32, 32, device="cuda", generator=gen).to(memory_format=torch.channels_last)
        y = torch.randint(0, classes, (128,), device="cuda", generator=gen)
        scalers = {key: torch.amp.GradScaler("cuda") for key in opts}

        def backward(key: str) -> None:
            m, opt = opts[key]
            opt.zero_grad(set_to_none=True)
            with torch.autocast("cuda", dtype=torch.float16):
                loss = nn.functional.cross_entropy(m(x), y)
            scalers[key].scale(loss).backward()

        def train_step(key: str) -> None:
            backward(key)
            scalers[key].step(opts[key][1])
            scalers[key].update()

        for key in opts:
            for _ in range(3):
                train_step(key)
        info = {}
        for key, (_, opt) in opts.items():
            backward(key)
            kernels = _kernels_in_step(opt, scalers[key])
            scalers[key].update()
            backward(key)
            sync = _synchronises(opt, scalers[key])
            scalers[key].update()
            info[key] = (kernels, sync)
        times = {key: [] for key in opts}
        starts = {key: torch.cuda.Event(enable_timing=True) for key in opts}
        ends = {key: torch.cuda.Event(enable_timing=True) for key in opts}
        for _ in range(repeats):
            for key in opts:
                torch.cuda.synchronize()
                starts[key].record()
                for _ in range(5):
                    train_step(key)
                ends[key].record()
                torch.cuda.synchronize()
                times[key].append(starts[key].elapsed_time(ends[key]) / 5)
        sgd = statistics.median(times["SGD"])
        for key in opts:
            t = statistics.median(times[key])
            goal = "" if key == "SGD" else f"≤ 1.10: {'met' if t / sgd <= 1.10 else 'missed'}"
            rows.append(f"| {name} | {key} | {t:.2f} | {t / sgd:.3f} | {goal} | {info[key][1]} | {info[key][0]} |")
        print("\n".join(rows[-len(opts):]), flush=True)
        del opts, model
        torch.cuda.empty_cache()
    return rows


def main() -> None:
    global clock
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--training", action="store_true", help="also the whole ResNet-20 training step (CPU)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    command = (f"python benchmarks/bench_sfw_step.py --repeats {args.repeats} --threads {args.threads}"
               + (" --training" if args.training else "") + (" --device cuda" if args.device == "cuda" else ""))
    if args.device == "cuda":
        if not torch.cuda.is_available():
            raise SystemExit("--device cuda needs a CUDA device")
        rows = bench_gpu(args.repeats)
        write_section("sfw_step_gpu", "\n".join([
            "## SFW step cost on a GPU (`benchmarks/bench_sfw_step.py --device cuda`)",
            "",
            f"Command: `{command}`. {machine_line()}",
            "Whole training step (forward + backward under float16 autocast, GradScaler, optimizer step), "
            "batch 128, 3×32×32 random inputs, channels_last; medians of interleaved repeats of 5 steps "
            "(CUDA events). Sync: whether `scaler.step(opt)` synchronises with the host "
            "(`torch.cuda.set_sync_debug_mode(\"error\")`). Kernels: CUDA kernels of one `scaler.step(opt)` "
            "(torch.profiler).",
            "",
            "| model | optimizer | step ms | ratio to SGD | goal | sync in step | kernels per step |",
            "|---|---|---|---|---|---|---|",
            *rows,
        ]))
        return
    if args.threads == 1:
        clock = time.thread_time
    step_rows = []
    for name, model in [("cnn (65.8k params)", build_model("cnn", num_classes=10, in_channels=1, seed=0)),
                        ("resnet20 (272k params)", build_model("resnet20", num_classes=10, in_channels=3, seed=0))]:
        step_rows += bench_optimizer_step(name, model, args.repeats)
        print("\n".join(step_rows[-8:]), flush=True)
    selection_rows = bench_selection(max(3, args.repeats // 3))
    print("\n".join(selection_rows), flush=True)
    train_rows = bench_training_step(max(5, args.repeats // 3)) if args.training else []
    load = os.getloadavg()
    clock_text = ("thread CPU time (`time.thread_time`)" if clock is time.thread_time else "wall-clock time")
    text = [
        "## SFW step cost (`benchmarks/bench_sfw_step.py`)",
        "",
        f"Command: `OMP_NUM_THREADS={args.threads} {command}`. {machine_line()} "
        f"Load average (1/5/15 min) at the end of the run: {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} "
        f"(other jobs on the 2 cores). Clock: {clock_text}.",
        "SFW: lr 0.1, momentum 0.9, rescale 'gradient', width 10, k = 0.1 (k-support, K-sparse) or 0.3 "
        "(group, spectral); 'spectral_k_support warm': `spectral_refresh=50`; SGD: momentum 0.9 (torch default: the per-tensor loop on the CPU, foreach on CUDA). "
        "Medians of interleaved repeats, random gradients.",
        "",
        "### One optimizer.step()",
        "",
        "Times (ms) and ratios are given as median / minimum over the repeats; the LMO columns are the median "
        "times of calling every region's own `lmo` once (one by one), and of the batched "
        "`sparsefw.constraints.lmos` (the exact LMOs; the step itself runs its planned batches).",
        "",
        "| model | optimizer | step (ms) | LMOs, one by one (ms) | LMOs, batched (ms) | ratio to SGD | goal (on the median) |",
        "|---|---|---|---|---|---|---|",
        *step_rows,
        "",
        "### k-th largest selection for the k-support LMO (WRN-28-10 conv shapes, k = 10 %)",
        "",
        "ns per entry, medians: `torch.topk` (the previous threshold), `kth_largest_rows` (strided-sample "
        "bracket, exact counts, topk on the band; identical result), and the whole `KSupportBall.lmo`.",
        "",
        "| matrix | topk ns/entry | selection ns/entry | speed-up | whole LMO ns/entry |",
        "|---|---|---|---|---|",
        *selection_rows,
    ]
    if train_rows:
        text += ["", "### Whole training step on ResNet-20 (forward + backward + step, batch 128, 3×32×32)", "",
                 "| optimizer | time (ms), median / min | ratio to SGD, median / min |", "|---|---|---|", *train_rows]
    write_section("sfw_step", "\n".join(text))


if __name__ == "__main__":
    main()
