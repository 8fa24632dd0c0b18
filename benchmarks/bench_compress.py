"""What one-shot compression buys on the CPU: parameters, FLOPs and measured latency (eval, no grad,
models interleaved by `sparsefw.compress.measure_latency`), compressed against dense in one process.

    python benchmarks/bench_compress.py coupled --threads 1 --repeats 60 20
        # per-layer vs coupled removal vs factorization, beside nets built natively at the widths
        # coupled removal leaves (C − ⌊amount·C⌋ per channel space: the physical limit) ("coupled")
    python benchmarks/bench_compress.py factorize   # latency-aware factorization ("factorize")
    ... --quick                                     # seconds: one small net, few repeats, prints only

Random weights (latency does not depend on their values) with randomised BN statistics, so removed
channels emit constants that must be folded.
"""
from __future__ import annotations

import math
import statistics
import time

import torch
from torch import nn

import _harness as H
from sparsefw.compress import count_flops, count_parameters, factorize, measure_latency, remove_filters
from sparsefw.models import BottleneckResNet, MobileNetV2, build_model
from sparsefw.models.resnet import ResNet

AMOUNTS = (0.3, 0.5, 0.7)
RANKS = (0.5, 0.25)
COUPLED_NETS = {  # name: (builder(channel map), input size)
    "ResNet-20": (lambda width=lambda c: c: ResNet(tuple(width(c) for c in (16, 32, 64)), (3, 3, 3), 3, 10), 32),
    "ResNet-50-shaped (base 32)": (lambda width=lambda c: c: BottleneckResNet(3, 10, base=32, channels=width), 64),
    "MobileNetV2": (lambda width=lambda c: c: MobileNetV2(3, 10, channels=width), 64),
}


def trained_like(model: nn.Module) -> nn.Module:
    """Randomised BN statistics, γ and β, eval mode."""
    torch.manual_seed(0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.5)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.5)
    return model.eval()


# --- coupled --------------------------------------------------------------------------------------
def coupled_variants(build, size: int) -> dict[str, nn.Module]:
    torch.manual_seed(0)
    dense = trained_like(build())
    x = torch.randn(1, 3, size, size)
    out = {"dense": dense}
    for a in AMOUNTS:
        out[f"per-layer {a:.0%}"] = remove_filters(dense, a, x)
        out[f"coupled {a:.0%}"] = remove_filters(dense, a, x, coupled=True)
        out[f"native at coupled widths {a:.0%}"] = trained_like(build(lambda c, a=a: c - math.floor(a * c)))
    for r in RANKS:
        out[f"rank kept {r:.0%}"] = factorize(dense, rank=r)
    return out


def coupled_goals(name: str, latency: dict) -> str:
    """The issue's three speed goals for one net: met or not, with the measured ratios."""
    def ratio(batch, label, reference="dense"):
        return latency[batch][reference] / latency[batch][label]

    def verdict(values, bound, what=""):
        return f"{'met' if min(values) >= bound else 'not met'} ({what}{min(values):.2f}–{max(values):.2f}"
    native = [ratio(b, f"coupled {a:.0%}", f"native at coupled widths {a:.0%}") for a in AMOUNTS for b in (1, 64)]
    per_64, per_1 = ([ratio(b, f"per-layer {a:.0%}") for a in AMOUNTS] for b in (64, 1))
    fact = [ratio(b, f"rank kept {r:.0%}") for r in RANKS for b in (1, 64)]
    return (f"- {name}: coupled within 10 % of native: {verdict(native, 0.9, 'native/coupled ')}); "
            f"per-layer never slower than dense at batch 64: {verdict(per_64, 1.0)}×), within 5 % at batch 1: "
            f"{verdict(per_1, 0.95)}×); no factorized model slower: {verdict(fact, 1.0)}×).")


def coupled(args) -> dict[str, str]:
    repeats = dict(zip((1, 64), (2, 1) if args.quick else args.repeats))
    nets = dict(list(COUPLED_NETS.items())[:1]) if args.quick else COUPLED_NETS
    load_before, started = H.load_line(), time.time()
    parts, goals = [], []
    for name, (build, size) in nets.items():
        models = coupled_variants(build, size)
        x1 = torch.randn(1, 3, size, size)
        latency = {b: dict(zip(models, measure_latency(list(models.values()), torch.randn(b, 3, size, size),
                                                       warmup=3, repeats=n))) for b, n in repeats.items()}
        dense_p, dense_f = count_parameters(models["dense"]), count_flops(models["dense"], x1)
        rows = []
        for label, model in models.items():
            native = label.replace("coupled", "native at coupled widths")
            rows.append([label, f"{count_parameters(model) / dense_p:.3f}", f"{count_flops(model, x1) / dense_f:.3f}",
                         *(f"{latency[b][label]:.2f} ms ({latency[b]['dense'] / latency[b][label]:.2f}×)" for b in repeats),
                         " / ".join(f"{latency[b][native] / latency[b][label]:.2f}" for b in repeats)
                         if label.startswith("coupled") else ""])
        parts += [f"**{name}** ({dense_p:,} parameters, {dense_f / 1e6:.1f} MFLOPs per {size}×{size} image)", "",
                  *H.table(["variant", "params", "FLOPs", "latency batch 1 (speed-up)", "latency batch 64 (speed-up)",
                            "speed vs native, batch 1 / 64"], rows), ""]
        goals.append(coupled_goals(name, latency))
    return {"coupled": H.section("coupled", command=args.command, seconds=time.time() - started, r1=repeats[1],
                                 r64=repeats[64], load_before=load_before, parts=parts, goals=goals)}


# --- factorize ------------------------------------------------------------------------------------
WHY_LAYERS = ("layers.0.1.conv1", "layers.1.1.conv1", "layers.2.1.conv1")   # one per ResNet-20 stage
LATENCY_BUDGETS = (0.9, 0.75)


def passes(models: list[nn.Module], x: torch.Tensor, repeats: int, n: int) -> tuple[list[float], list[float]]:
    """Median over `n` interleaved passes of each model's median ms, and of its per-pass speed-up over
    the first model (a ratio within one pass sees the same machine load)."""
    runs = [measure_latency(models, x, warmup=3, repeats=repeats) for _ in range(n)]
    ms = [statistics.median(p[i] for p in runs) for i in range(len(models))]
    return ms, [statistics.median(p[0] / p[i] for p in runs) for i in range(len(models))]


def factorize_cell(model, dense, x1, ms, speedup, layers) -> str:
    return (f"{layers} layers, params {count_parameters(model) / count_parameters(dense):.2f}, "
            f"FLOPs {count_flops(model, x1) / count_flops(dense, x1):.2f}, {ms:.2f} ms (**{speedup:.2f}×**)")


def why_rows(dense, x: torch.Tensor, batch: int, conv_recipe: dict, timed_recipe: dict) -> list[list]:
    """One row per layer of WHY_LAYERS: its rank, the pair's FLOPs share and its measured latency share."""
    rows = []
    for layer in WHY_LAYERS:
        c_layer, c = dense.get_submodule(layer), timed_recipe["costs"][layer]
        m, k = c_layer.out_channels, c_layer.in_channels * 9
        r = timed_recipe["ranks"].get(layer, conv_recipe["ranks"][layer])
        rows.append([f"{layer} ({c_layer.in_channels}→{m}, {x.shape[2] >> WHY_LAYERS.index(layer)}²)", batch, r,
                     f"{r * (m + k) / (m * k):.2f}",
                     f"{c['dense']:.3f} → {c['factorized']:.3f} ms ({c['factorized'] / c['dense']:.2f})"])
    return rows


def rank_row(name: str, dense, x: torch.Tensor, x1: torch.Tensor, kept: float, repeats: int, n_passes: int):
    """(table row, the recipes of the conv and timed rules, the timed model's speed-up) at one rank kept:
    the old default, conv layers by break-even and the latency-aware default against dense."""
    before, rb = factorize(dense, rank=kept, layers="all", cost="params", return_recipe=True)
    conv, rc = factorize(dense, rank=kept, return_recipe=True)
    start = time.perf_counter()
    now, rn = factorize(dense, rank=kept, example_inputs=x, return_recipe=True)
    seconds = time.perf_counter() - start
    ms, up = passes([dense, before, conv, now], x, repeats, n_passes)
    timed_slower = len(rn["costs"]) - sum(k in rn["ranks"] for k in rn["costs"])
    row = [name, f"{kept:.0%}", len(x), f"{ms[0]:.2f}",
           *(factorize_cell(m, dense, x1, ms[i], up[i], len(r["ranks"]))
             for i, (m, r) in enumerate([(before, rb), (conv, rc), (now, rn)], 1)),
           f"{timed_slower} of {len(rn['costs'])}", f"{seconds:.1f} s"]
    return row, rc, rn, up[3]


def budget_row(name: str, dense, x: torch.Tensor, budget: float, repeats: int, n_passes: int) -> list:
    """The global latency budget's promise against the measured latency ratio."""
    try:
        small, recipe = factorize(dense, budget=budget, budget_kind="latency", example_inputs=x, return_recipe=True)
    except ValueError as error:
        return [name, len(x), budget, "–", "–", error]
    (dense_ms, _), (_, speedup) = passes([dense, small], x, repeats, n_passes)
    promised = sum(c["dense"] - c["factorized"] for k, c in recipe["costs"].items() if k in recipe["ranks"])
    return [name, len(x), budget, f"{len(recipe['ranks'])} of {len(recipe['ranks']) + len(recipe['skipped'])}",
            f"{1 / speedup:.3f}", f"saved per layer, summed: {promised:.2f} ms of {dense_ms:.2f} ms; params "
            f"{count_parameters(small) / count_parameters(dense):.2f}"]


def factorize_bench(args) -> dict[str, str]:
    """At each rank kept and batch: the old default (`layers="all", cost="params"`), conv layers by
    parameter break-even, and the latency-aware default (`example_inputs=x`), against dense; then the
    global latency budget's promise against the measured latency."""
    repeats, n_passes = ({1: 2, 64: 1}, 1) if args.quick else ({1: 40, 64: 10}, 5)
    torch.manual_seed(0)
    models = {"ResNet-20": (build_model("resnet20", 10, 3).eval(), (3, 32, 32)),
              "small CNN": (build_model("cnn", 10, 1).eval(), (1, 28, 28)),
              "ResNet-50-shaped": (BottleneckResNet(3, 1000).eval(), (3, 64, 64))}
    if args.quick:
        models = {"small CNN": models["small CNN"]}
    load_start = H.load_line()
    rows, slower, budget_rows, why = [], [], [], []
    for name, (dense, shape) in models.items():
        x1 = torch.randn(1, *shape)
        for batch, n in repeats.items():
            x = torch.randn(batch, *shape)
            for kept in RANKS:
                row, rc, rn, speedup = rank_row(name, dense, x, x1, kept,
                                                max(3, n // 2) if name == "ResNet-50-shaped" and batch > 1 else n, n_passes)
                rows.append(row)
                if name == "ResNet-20" and kept == 0.5:
                    why += why_rows(dense, x, batch, rc, rn)
                if speedup < 1 and rn["ranks"]:      # with no layer factorized it is the dense model
                    slower.append(f"{name}, {kept:.0%} kept, batch {batch}: {speedup:.2f}×")
            budget_rows += [budget_row(name, dense, x, budget, n, n_passes) for budget in LATENCY_BUDGETS]
    return {"factorize": factorize_section(args, repeats, n_passes, load_start, rows, slower, why, budget_rows)}


def factorize_section(args, repeats: dict, n_passes: int, load_start: str, rows: list, slower: list, why: list,
                      budget_rows: list) -> str:
    verdict = ("no latency-aware factorized model ran slower than its dense original (a row with 0 layers "
               "factorized is the dense model itself)" if not slower else "slower than dense: " + "; ".join(slower))
    return H.section(
        "factorize", command=args.command, load_start=load_start, r1=repeats[1], r64=repeats[64], passes=n_passes,
        verdict=verdict,
        table=H.table(["model", "rank kept", "batch", "dense ms", "before", "conv", "now", "timed slower", "time"],
                      rows),
        why=H.table(["layer (c_in→c_out, input side)", "batch", "r", "pair FLOPs / dense",
                     "pair latency: dense → pair ms (share)"], sorted(why, key=str)),
        budgets=H.table(["model", "batch", "budget", "layers factorized", "measured latency ratio", "note"],
                        budget_rows))


def coupled_arguments(parser) -> None:
    parser.add_argument("--repeats", type=int, nargs=2, default=(30, 8), metavar=("B1", "B64"),
                        help="interleaved rounds at batch 1 and batch 64")


VARIANTS = {
    "coupled": H.Variant(coupled, "coupled vs per-layer removal vs native nets (section coupled)",
                         coupled_arguments, threads=2),
    "factorize": H.Variant(factorize_bench, "latency-aware factorization (section factorize)"),
}

if __name__ == "__main__":
    H.main("bench_compress.py", __doc__, VARIANTS)
