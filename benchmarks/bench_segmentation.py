"""Semantic segmentation on M2NIST: SGD and Adam against SFW in each mode, then one-shot compression
of the trained nets — mIoU kept, parameters, FLOPs and measured latency.

    python benchmarks/bench_segmentation.py [--shard 0/2]   (appends to results/segmentation_runs.jsonl;
                                                            two shards use two cores)
    python benchmarks/bench_segmentation.py --report       (the "segmentation" section + segmentation.png)
    python benchmarks/bench_segmentation.py --quick        (one seed, a tiny budget, temporary files)

Task, nets, methods, compression and costs: sections/segmentation.md (the section's text).
"""
from __future__ import annotations

import _harness as H  # first, before torch: it sets OMP_WAIT_POLICY (see its docstring)

import statistics
from pathlib import Path

import torch

import _tasks as T
from sparsefw import compress
from sparsefw.compress.metrics import count_nonzero_parameters, count_sparse_flops
from sparsefw.data import get_datasets
from sparsefw.models import build_model

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
    data = [train[:], test[:]]
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
    for task, method, seed in jobs[shard[0]::shard[1]]:
        def one():
            model, seconds = T.train(task, method, seed)         # SFW: constrain(..., example_inputs=x[:2])
            return {"seconds": seconds, "scores": T.sweep(task, model, LEVELS),
                    "costs": costs(model, task.test[0][:LATENCY_BATCH])}
        H.run_logged(jsonl, {"task": task.name, "method": method, "seed": seed, "budget": budget}, one)


def summary(records: list[dict]) -> dict:
    """`_tasks.summary` of this benchmark's methods and levels, the nets in the order of NETS."""
    order = list(NETS)
    records = sorted(records, key=lambda r: order.index(r["task"]) if r["task"] in order else 0)
    return T.summary(records, METHODS, LEVELS)


def cost_lines(records: list[dict]) -> list[str]:
    """One row per net: params / FLOPs / latency ratio at each level, medians over its runs."""
    rows = []
    for net, (model, widths) in NETS.items():
        rs = [r["costs"] for r in records if r["task"] == net]
        if not rs:
            continue
        dense = build_model(model, 11, 1, 64, widths=widths)
        mflops = compress.count_flops(dense, torch.zeros(1, 1, 64, 64)) / 1e6
        ms = statistics.median(r["dense"]["latency_ms"] for r in rs)
        rows.append([net, f"{compress.count_parameters(dense):,} / {mflops:.1f} / {ms:.1f}",
                     *(" / ".join(f"{statistics.median(r[c][k] for r in rs):.2f}" for k in ("params", "flops", "latency"))
                       for c in T.columns(LEVELS))])
    return H.table(["net", f"dense: params / MFLOPs per canvas / ms per batch of {LATENCY_BATCH}", *T.columns(LEVELS)],
                   rows)


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
                latency = statistics.median(r["costs"][col]["latency"] for r in records if r["task"] == net)
                text += f", latency ×{1 / latency:.2f} faster"
            if sgd is not None and sgd[col][0] < 0.5:
                text += (f", {k / sgd[col][0]:.1f}× SGD's {sgd[col][0]:.2f} "
                         f"({'met' if k >= 2 * sgd[col][0] else 'NOT met'})")
            parts.append(text)
        out.append(f"- **{net}**: " + "; ".join(parts))
    return out


def report(jsonl: Path, png: Path, command: str = "--shard 0/2` and `--shard 1/2` in parallel, then `--report") -> str:
    records = H.read_jsonl(jsonl)
    s = summary(records)
    T.kept_figure(s, METHODS, T.columns(LEVELS), png, dense="dense mIoU", goals=dict.fromkeys(NETS, 0.9), title=lambda net: f"M2NIST, {net}")
    b = records[0]["budget"] if records else BUDGET
    budget = (f"{b['canvases']:,} train canvases, {b['epochs']} epochs of batches of {b['batch_size']} "
              f"({b['epochs'] * -(-b['canvases'] // b['batch_size'])} steps), {b['test']} test canvases")
    return H.section("segmentation", command=command, minutes=sum(r["seconds"] for r in records) / 60, budget=budget,
                     table=T.summary_table(s, LEVELS, first="net", dense="dense mIoU"), png=png.name,
                     costs=cost_lines(records), goals=goal_lines(s, records))


def segmentation(args) -> dict[str, str]:
    jsonl = args.results / "segmentation_runs.jsonl"
    if args.quick:
        run(jsonl, (0, 1), seeds=(0,), budget={"canvases": 200, "test": 50, "epochs": 1, "batch_size": 32})
    elif not args.report:
        run(jsonl, args.shard)
    return {"segmentation": report(jsonl, args.results / "segmentation.png", *(["--quick"] if args.quick else []))}


VARIANTS = {"segmentation": H.Variant(
    segmentation, "M2NIST: train, compress, report (section segmentation)", report=True, shard=True)}

if __name__ == "__main__":
    H.main("bench_segmentation.py", __doc__, VARIANTS)
