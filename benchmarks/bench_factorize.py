"""Latency-aware factorization: is any factorized model slower than its dense original?

Run:  OMP_NUM_THREADS=1 python benchmarks/bench_factorize.py     (~10 min on one busy core; writes
                                                                  the "factorize" section of BENCHMARKS.md)

For ResNet-20 (32×32), the small CNN (28×28×1) and a ResNet-50-shaped bottleneck net (ImageNet
stem and widths, [3, 4, 6, 3] bottlenecks, 1000 classes, at 64×64 to keep CPU time short), at
50 % and 25 % of each layer's rank kept, batch 1 and 64, on the CPU:
    before   the old default: every Conv2d and Linear, skipped only past parameter break-even
             (`layers="all", cost="params"`)
    conv     the new default without example inputs: conv layers only, break-even by parameters
    now      the new default with example inputs: conv layers, each kept only where its factor pair
             ran faster than the dense layer on that layer's input at this batch size
and their dense original; the four models' latencies are interleaved in one process (medians).
Then a global latency budget (`budget_kind="latency"`): the fitted-cost model's promise against the
measured latency.
"""
from __future__ import annotations

import os
import time

import torch
from torch import nn

from _report import machine_line, write_section
from sparsefw.compress import count_flops, count_parameters, factorize, measure_latency
from sparsefw.models import build_model

RANKS = (0.5, 0.25)
REPEATS = {1: 40, 64: 8}
LATENCY_BUDGETS = (0.9, 0.75)


class Bottleneck(nn.Module):
    """1×1 reduce, 3×3 (stride), 1×1 expand ×4, BN after each; projection shortcut when the shape changes."""

    def __init__(self, c_in: int, width: int, stride: int):
        super().__init__()
        c_out = 4 * width
        self.conv1, self.bn1 = nn.Conv2d(c_in, width, 1, bias=False), nn.BatchNorm2d(width)
        self.conv2, self.bn2 = nn.Conv2d(width, width, 3, stride, 1, bias=False), nn.BatchNorm2d(width)
        self.conv3, self.bn3 = nn.Conv2d(width, c_out, 1, bias=False), nn.BatchNorm2d(c_out)
        self.shortcut = nn.Sequential()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        out = torch.relu(self.bn2(self.conv2(out)))
        return torch.relu(self.bn3(self.conv3(out)) + self.shortcut(x))


class BottleneckNet(nn.Module):
    """ResNet-50's layout: 7×7/2 stem, 3×3/2 max-pool, stages of [3, 4, 6, 3] bottlenecks of widths
    64·2^i (outputs ×4), global average pool, Linear 2048 → classes."""

    def __init__(self, num_classes: int = 1000, blocks=(3, 4, 6, 3)):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(),
                                  nn.MaxPool2d(3, 2, 1))
        layers, c_in = [], 64
        for stage, count in enumerate(blocks):
            for b in range(count):
                layers.append(Bottleneck(c_in, 64 * 2 ** stage, 2 if stage > 0 and b == 0 else 1))
                c_in = 4 * 64 * 2 ** stage
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(c_in, num_classes)

    def forward(self, x):
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(self.layers(self.stem(x)), 1), 1))


def models() -> dict[str, tuple[nn.Module, tuple[int, ...]]]:
    torch.manual_seed(0)
    return {"ResNet-20": (build_model("resnet20", 10, 3).eval(), (3, 32, 32)),
            "small CNN": (build_model("cnn", 10, 1).eval(), (1, 28, 28)),
            "ResNet-50-shaped": (BottleneckNet().eval(), (3, 64, 64))}


def n_layers(model: nn.Module) -> int:
    return sum(isinstance(m, (nn.Conv2d, nn.Linear)) for m in model.modules())


def load() -> str:
    return "load average {:.2f} {:.2f} {:.2f}".format(*os.getloadavg())


def cell(model, dense, x1, ms, dense_ms, layers) -> str:
    return (f"{layers} layers, params {count_parameters(model) / count_parameters(dense):.2f}, "
            f"FLOPs {count_flops(model, x1) / count_flops(dense, x1):.2f}, {ms:.2f} ms "
            f"(**{dense_ms / ms:.2f}×**)")


def main() -> None:
    torch.set_num_threads(1)
    load_start = load()
    rows, slower, budget_rows = [], [], []
    for name, (dense, shape) in models().items():
        x1 = torch.randn(1, *shape)
        for batch, repeats in REPEATS.items():
            x = torch.randn(batch, *shape)
            for kept in RANKS:
                before, rb = factorize(dense, rank=kept, layers="all", cost="params", return_recipe=True)
                conv, rc = factorize(dense, rank=kept, return_recipe=True)
                start = time.perf_counter()
                now, rn = factorize(dense, rank=kept, example_inputs=x, return_recipe=True)
                seconds = time.perf_counter() - start
                ms = measure_latency([dense, before, conv, now], x, warmup=3,
                                     repeats=max(3, repeats // 2) if name == "ResNet-50-shaped" and batch > 1
                                     else repeats)
                timed_slower = sum(c["factorized"] >= c["dense"] for c in rn["costs"].values())
                rows.append(f"| {name} | {kept:.0%} | {batch} | {ms[0]:.2f} | "
                            f"{cell(before, dense, x1, ms[1], ms[0], len(rb['ranks']))} | "
                            f"{cell(conv, dense, x1, ms[2], ms[0], len(rc['ranks']))} | "
                            f"{cell(now, dense, x1, ms[3], ms[0], len(rn['ranks']))} | "
                            f"{timed_slower} of {len(rn['costs'])} | {seconds:.1f} s |")
                print(rows[-1], flush=True)
                if ms[3] > ms[0]:
                    slower.append(f"{name}, {kept:.0%} kept, batch {batch}: {ms[0]:.2f} → {ms[3]:.2f} ms")
            for budget in LATENCY_BUDGETS:
                try:
                    small, recipe = factorize(dense, budget=budget, budget_kind="latency", example_inputs=x,
                                              return_recipe=True)
                except ValueError as error:
                    budget_rows.append(f"| {name} | {batch} | {budget} | – | – | {error} |")
                    continue
                dense_ms, small_ms = measure_latency([dense, small], x, warmup=3, repeats=repeats)
                promised = sum(c["dense"] - c["factorized"] for n, c in recipe["costs"].items()
                               if n in recipe["ranks"])
                budget_rows.append(
                    f"| {name} | {batch} | {budget} | {len(recipe['ranks'])} of {n_layers(dense)} | "
                    f"{small_ms / dense_ms:.3f} | saved per layer, summed: {promised:.2f} ms of "
                    f"{dense_ms:.2f} ms; params {count_parameters(small) / count_parameters(dense):.2f} |")
                print(budget_rows[-1], flush=True)
    table, budget_table = "\n".join(rows), "\n".join(budget_rows)
    verdict = ("no latency-aware factorized model ran slower than its dense original"
               if not slower else "slower than dense: " + "; ".join(slower))
    write_section("factorize", f"""## Latency-aware factorization (`benchmarks/bench_factorize.py`)

Command: `OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/bench_factorize.py`. {machine_line()}
Machine load: {load_start} at the start, {load()} at the end (other helpers' jobs shared the 2
cores). Random initialisation (latency does not depend on the weights' values). Cells: layers
factorized, params and FLOPs as a share of dense, median latency of interleaved eval calls
({REPEATS[1]} at batch 1, {REPEATS[64]} at batch 64, half of that for the ResNet-50-shaped net),
speed-up = dense / factorized. *before*: every Conv2d and Linear below parameter break-even (the
old default); *conv*: conv layers below break-even (the default without example inputs); *now*:
`factorize(model, rank=..., example_inputs=x)`, conv layers whose factor pair ran faster than the
dense layer on that layer's input from x. "timed slower": of the layers below break-even (fewer
FLOPs), how many ran slower as a pair, so a FLOP count would have picked them; "time": factorize
with its measurements.

| model | rank kept | batch | dense ms | before | conv | now | timed slower | time |
|---|---|---|---|---|---|---|---|---|
{table}

Verdict: {verdict}.

Global latency budget, `factorize(model, budget=b, budget_kind="latency", example_inputs=x)`
(each layer's pair priced by a line fitted to its cost at three ranks, the rest of the model at
its measured cost): measured latency ratio against the budget b.

| model | batch | budget | layers factorized | measured latency ratio | note |
|---|---|---|---|---|---|
{budget_table}
""")


if __name__ == "__main__":
    main()
