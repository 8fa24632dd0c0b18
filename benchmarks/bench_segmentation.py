"""Semantic segmentation on M2NIST: SGD and Adam against SFW in each mode, then one-shot compression
of the trained nets — mIoU kept, parameters, FLOPs and measured latency.

Run:  python benchmarks/bench_segmentation.py [--shard 0/2]  (appends to results/segmentation_runs.jsonl;
                                                            two shards use two cores)
      python benchmarks/bench_segmentation.py --report      (the "segmentation" section + segmentation.png)
      python benchmarks/bench_segmentation.py --quick       (one seed, a tiny budget, temporary files)

Task: M2NIST canvases (64×64, 1-3 real MNIST digits, 11 classes: background + 10 digits; train and test
canvases from disjoint digit pools), BUDGET below. Loss: cross-entropy + soft Dice (`_tasks.ce_dice`):
with cross-entropy alone, background (≈ 95 % of the pixels) dominates the gradient and short runs
predict background only. Nets: the library's "fcn" (strided encoder, bilinear decoder, no skips) and
"unet" (max-pool encoder to 1/4 with a dilated conv, bilinear upsampling, skip concatenations).
Methods: SGD (lr 0.1, momentum 0.9, weight decay 5e-4), Adam (lr 1e-2; 1e-3 stalls near mIoU 0.28
on these narrow nets), and SFW at the library defaults, `sparsefw.SFW(sparsefw.constrain(model, mode,
example_inputs=x))`; seeds 0, 1, 2, linear LR decay to 0. Compression, no retraining, no BN
recalibration: global magnitude pruning, L1 filter removal in every conv (per layer), coupled channel
removal (`coupled=True`), per-conv truncated SVD (`layers="conv"`). Cost of each compressed net:
stored parameters (non-zero ones for pruning), FLOPs (sparse-kernel FLOPs for pruning) and latency
(eval forward of a batch of 16 canvases, one thread, interleaved medians), as ratios to the dense
net, medians over runs.
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import statistics
import tempfile
from pathlib import Path

import torch

import _tasks as T
from _report import machine_line, write_section
from _runlog import read_jsonl
from sparsefw import compress
from sparsefw.compress.metrics import count_nonzero_parameters, count_sparse_flops
from sparsefw.data import get_datasets
from sparsefw.experiments.io import save_figure
from sparsefw.models import build_model

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
BUDGET = {"canvases": 2000, "test": 500, "epochs": 12, "batch_size": 32}
NETS = {"U-Net 8-16-32": ("unet", (8, 16, 32)), "FCN 8-16-32": ("fcn", (8, 16, 32))}
METHODS = ("sgd_wd", "adam", "k_support", "group_k_support", "spectral_k_support", "coupled_group_k_support")
BASELINES = ("sgd_wd", "adam")
SEEDS = (0, 1, 2)
LEVELS = (("unstructured", 0.9, "90% unstr."), ("filters", 0.3, "30% filters"), ("filters", 0.5, "50% filters"),
          ("coupled", 0.3, "30% coupled"), ("coupled", 0.5, "50% coupled"),
          ("lowrank", 0.5, "50% rank kept"), ("lowrank", 0.25, "25% rank kept"))
# goals of the issue: (column, kept share ≥, the SFW mode made for that structure)
GOALS = (("90% unstr.", 0.90, "k_support"), ("50% filters", 0.90, "group_k_support"),
         ("50% coupled", 0.95, "coupled_group_k_support"), ("50% rank kept", 0.90, "spectral_k_support"))
LATENCY_BATCH = 16


def tasks(budget: dict = BUDGET) -> list[T.Task]:
    train, test, _ = get_datasets("m2nist", subset=(budget["canvases"], budget["test"]))
    data = [ds[torch.arange(len(ds))] for ds in (train, test)]
    return [T.Task(name, lambda m=model, w=widths: build_model(m, 11, 1, 64, widths=w), data[0], data[1], 11,
                   kind="segmentation", epochs=budget["epochs"], batch_size=budget["batch_size"], loss=T.ce_dice)
            for name, (model, widths) in NETS.items()]


def costs(model: torch.nn.Module, example: torch.Tensor) -> dict[str, dict[str, float]]:
    """{column: {"params", "flops", "latency"}} as ratios compressed / dense; pruning counts the
    non-zero parameters and sparse-kernel FLOPs. Latencies: one interleaved measurement of all nets."""
    nets = [T.compressed(model, kind, level, example[:2]).eval() for kind, level, _ in LEVELS]
    latency = compress.measure_latency([model, *nets], (example,), warmup=3, repeats=20)
    params, flops = compress.count_parameters(model), compress.count_flops(model, example)
    out = {"dense": {"latency_ms": latency[0]}}
    for (kind, _, col), net, ms in zip(LEVELS, nets, latency[1:]):
        sparse = kind == "unstructured"
        p = count_nonzero_parameters(net) if sparse else compress.count_parameters(net)
        f = count_sparse_flops(net, example) if sparse else compress.count_flops(net, example)
        out[col] = {"params": p / params, "flops": f / flops, "latency": ms / latency[0]}
    return out


def run(jsonl: Path, shard: tuple[int, int], seeds=SEEDS, budget: dict = BUDGET, methods=METHODS) -> None:
    jobs = [(task, method, seed) for task in tasks(budget) for seed in seeds for method in methods]  # seed-major
    i, n = shard
    for task, method, seed in jobs[i::n]:
        def one():
            model, seconds = T.train(task, method, seed)         # SFW: constrain(..., example_inputs=x[:2])
            return {"seconds": seconds, "scores": T.sweep(task, model, LEVELS),
                    "costs": costs(model, task.test[0][:LATENCY_BATCH])}
        T.run_logged(jsonl, {"task": task.name, "method": method, "seed": seed, "budget": budget}, one)


def summary(records: list[dict]) -> dict:
    """`_tasks.summary` of this benchmark's methods and levels, the nets in the order of NETS."""
    order = list(NETS)
    records = sorted(records, key=lambda r: order.index(r["task"]) if r["task"] in order else 0)
    return T.summary(records, METHODS, LEVELS)


def cost_lines(records: list[dict]) -> list[str]:
    """One row per net: params / FLOPs / latency ratio at each level, medians over its runs."""
    cols = [c for _, _, c in LEVELS]
    head = f"| net | dense: params / MFLOPs per canvas / ms per batch of {LATENCY_BATCH} | "
    lines = [head + " | ".join(cols) + " |", "|---|---|" + "---|" * len(cols)]
    for net, (model, widths) in NETS.items():
        rs = [r["costs"] for r in records if r["task"] == net]
        if not rs:
            continue
        dense = build_model(model, 11, 1, 64, widths=widths)
        mflops = compress.count_flops(dense, torch.zeros(1, 1, 64, 64)) / 1e6
        ms = statistics.median(r["dense"]["latency_ms"] for r in rs)
        med = {c: {k: statistics.median(r[c][k] for r in rs) for k in ("params", "flops", "latency")} for c in cols}
        lines.append(f"| {net} | {compress.count_parameters(dense):,} / {mflops:.1f} / {ms:.1f} | "
                     + " | ".join(f"{m['params']:.2f} / {m['flops']:.2f} / {m['latency']:.2f}" for m in med.values())
                     + " |")
    return lines


def _median_cost(records: list[dict], net: str, col: str, key: str) -> float:
    return statistics.median(r["costs"][col][key] for r in records if r["task"] == net)


def goal_lines(s: dict, records: list[dict]) -> list[str]:
    """Per net and goal: SFW's dense gap to the best baseline, its kept share, and (where SGD keeps
    under half) its ratio to SGD's; the coupled goal also names the measured speed-up."""
    out = []
    for net in dict.fromkeys(t for t, _ in s):
        best = max((s[net, b]["dense"][0], b) for b in BASELINES if (net, b) in s)
        sgd = s.get((net, "sgd_wd"))
        parts = []
        for col, keep, mode in GOALS:
            sfw = s.get((net, mode))
            if sfw is None:
                parts.append(f"{col}: not run")
                continue
            gap, k = best[0] - sfw["dense"][0], sfw[col][0]
            text = (f"{col} ({mode}): dense {sfw['dense'][0]:.3f}, {100 * gap:+.1f} points below {best[1]} "
                    f"({'met' if gap <= 0.02 else 'NOT met'}), kept {k:.2f} {'≥' if k >= keep else '<'} {keep:.2f} "
                    f"({'met' if k >= keep else 'NOT met'})")
            if col.endswith("coupled"):
                text += f", latency ×{1 / _median_cost(records, net, col, 'latency'):.2f} faster"
            if sgd is not None and sgd[col][0] < 0.5:
                text += (f", {k / sgd[col][0]:.1f}× SGD's {sgd[col][0]:.2f} "
                         f"({'met' if k >= 2 * sgd[col][0] else 'NOT met'})")
            parts.append(text)
        out.append(f"- **{net}**: " + "; ".join(parts))
    return out


def plot(s: dict, path: Path) -> Path:
    """One panel per net: kept share at each level (bars), one colour per method, error bars = spread."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    nets = list(dict.fromkeys(t for t, _ in s))
    cols = [c for _, _, c in LEVELS]
    fig, axes = plt.subplots(1, len(nets), figsize=(7.5 * len(nets), 4.6), squeeze=False)
    for ax, net in zip(axes.flat, nets):
        T.kept_bars(ax, s, net, METHODS, cols, dense="dense mIoU")
        ax.set_ylim(0, 1.3)
        ax.axhline(0.9, color="gray", lw=0.8, ls="--")
        ax.set_title(f"M2NIST, {net}", fontsize=10)
        ax.set_ylabel("kept share of dense mIoU")
        ax.legend(fontsize=7, loc="upper right", framealpha=0.6, ncol=2)
    fig.tight_layout()
    try:
        return save_figure(path, fig)
    finally:
        plt.close(fig)


def report(jsonl: Path, png: Path, notes: list[str] | None = None, command: str = "--shard 0/2` and `--shard 1/2"
           ) -> str:
    records = read_jsonl(jsonl)
    s = summary(records)
    cols = [c for _, _, c in LEVELS]
    lines = ["| net | method | seeds | dense mIoU | " + " | ".join(cols) + " |",
             "|---|---|---|---|" + "---|" * len(cols)]
    for (net, method), cell in s.items():
        d = cell["dense"]
        lines.append(f"| {net} | {method} | {cell['seeds']} | {d[0]:.3f} ± {d[1]:.3f} | "
                     + " | ".join(T.cell(cell[c]) for c in cols) + " |")
    plot(s, png)
    minutes = sum(r["seconds"] for r in records) / 60
    return "\n".join([
        "## Semantic segmentation: M2NIST (`benchmarks/bench_segmentation.py`)", "",
        f"Command: `python benchmarks/bench_segmentation.py {command}` in parallel, then `--report` "
        f"({minutes:.0f} min of training in all). {machine_line()}", "",
        __doc__.split("\n\n", 2)[2].strip().replace("BUDGET below", _budget_text(records)), "",
        "Cells: dense test mIoU (500 test canvases), and the kept share (compressed / dense mIoU) after one-shot "
        "compression, mean ± half the range over the seeds.", "", *lines, "",
        f"![kept share of mIoU per net and level](benchmarks/results/{png.name})", "",
        "Cost of the compressed nets, as ratios to the dense net (params / FLOPs / latency; for 90% unstr. the "
        "non-zero parameters and the FLOPs of a sparse kernel — the stored net and its dense latency are unchanged):",
        "", *cost_lines(records), "",
        "### Goals of the issue (means over seeds; SFW in the mode made for each structure)", "",
        *goal_lines(s, records), *(["", "### Reading", "", *notes] if notes else [])])


def _budget_text(records: list[dict]) -> str:
    b = records[0]["budget"] if records else BUDGET
    steps = b["epochs"] * -(-b["canvases"] // b["batch_size"])
    return (f"{b['canvases']:,} train canvases, {b['epochs']} epochs of batches of {b['batch_size']} ({steps} steps), "
            f"{b['test']} test canvases")


NOTES = [  # the "Reading" paragraph, written after the run of 2026-12-05 (numbers from the tables above)
    "- **How the budget was found** (single-seed U-Net 8-16-32 runs, 2,000 canvases, batches of 32, mIoU on 500 test "
    "canvases): cross-entropy alone reached 0.18 (SGD) and 0.24 (Adam 3e-3) after 6 epochs; adding the Dice term, "
    "SGD reached 0.77 after 6 and 0.90 after 12 epochs. Adam at torch's default lr 1e-3 stayed at 0.27-0.28 after 8 "
    "epochs (flat since epoch 4; with cross-entropy alone too, and 0.32 after 6 at widths 16-32-64); lr 3e-3 reached "
    "0.86 and 1e-2 0.88 after 12. The FCN 8-16-32 reached 0.48 (SGD) and 0.49 (Adam 1e-2) after 8 and 12 epochs: "
    "without skips its receptive field (≈ 29 px) barely spans a 28 px digit, so a pixel sees too little of its digit "
    "to name it. A 4-level U-Net (1/8 bottleneck) did worse at this budget (SGD collapsed to background) and was "
    "dropped. Narrow nets (8-16-32, 24k parameters, 39 MFLOPs per canvas) and 2,000 canvases keep a run at 2.5-4 "
    "min on one shared core.",
    "- **U-Net: the baselines meet the bar** (SGD 0.895 ± 0.018, Adam 0.895 ± 0.014, every seed ≥ 0.878). "
    "**SFW at the defaults does on seeds 0 and 1** (0.869-0.897 in every mode) **but not on seed 2, in every mode** "
    "(k-support 0.37, group 0.42, spectral 0.50, coupled 0.78), so the means lie 5-18 points below the baselines' "
    "0.895 and miss the 2-point goal. Seed 2 is the same initialisation and batch order for the four modes: what "
    "fails is common to them (the defaults they share), not one region; it was not investigated further.",
    "- **Kept share**: compressed baselines predict background only (kept 0.10-0.16 at every 50 % level, at 90 % "
    "unstructured 0.10-0.12), so every SFW mode keeps more than twice their share except group k-support at 50 % "
    "filters (0.21 vs 0.11). The keep goals are not met: per-layer removal of 50 % of the filters fails for every "
    "mode (0.12-0.26; it also halves the 8-channel full-resolution convs), 90 % unstructured keeps 0.66 (k-support), "
    "50 % rank 0.66 (spectral). Coupled training is the robust one: it keeps 1.00 at 30 % coupled, 0.98 at 50 % rank "
    "and 0.87 at 50 % coupled (0.83 / 0.78 / 1.00 per seed) with a measured 2× speed-up (FLOPs 0.26).",
    "- **The FCN 8-16-32 does not learn at this budget, whatever the method**: 11 of its 18 runs end at mIoU 0.09-0.10 "
    "(background and a sliver), the best are SGD 0.65 and Adam 0.49 (seed 0); seeds decide more than methods. Its "
    "kept shares near 1 are those of nets that predict background before and after compression and measure nothing; "
    "its rows are kept for the cost table (same structures, no concatenations) and as the evidence that skips, not "
    "the optimizer, decide this task at this budget.",
    "- **Latency on one thread**: only coupled removal buys time (50 %: ×0.49 U-Net, ×0.52 FCN). Per-layer removal "
    "of 50 % leaves FLOPs at 0.37-0.41 but latency at 0.93 (removed channels are re-assembled to full width before "
    "the upsampling and concatenations that read them, in the profile), and factorizing these small convs is slower "
    "than the dense net (×1.11-1.19): two thin convs cost more per FLOP than one.",
    "- **Time**: 111 min of training summed over the 36 runs, about 70 min of wall time on two shards while other "
    "processes shared both cores (runs took 150-290 s; the last FCN runs, with the cores to themselves, 91-106 s). "
    "Unshared, the whole benchmark should take about 40 min (an estimate, not measured).",
]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shard", default="0/1", help="i/n: every n-th run starting at i")
    ap.add_argument("--report", action="store_true")
    ap.add_argument("--quick", action="store_true", help="one seed, 200 canvases, 1 epoch; prints the report")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    if args.quick:
        with tempfile.TemporaryDirectory() as tmp:
            jsonl = Path(tmp) / "quick.jsonl"
            run(jsonl, (0, 1), seeds=(0,), budget={"canvases": 200, "test": 50, "epochs": 1, "batch_size": 32})
            print(report(jsonl, Path(tmp) / "segmentation.png", command="--quick"))
        return
    RESULTS.mkdir(exist_ok=True)
    jsonl = RESULTS / "segmentation_runs.jsonl"
    if not args.report:
        run(jsonl, tuple(map(int, args.shard.split("/"))))
    write_section("segmentation", report(jsonl, RESULTS / "segmentation.png", NOTES))


if __name__ == "__main__":
    main()
