"""Parameters, FLOPs and CPU latency of one-shot compression on ResNet-20 (CIFAR layout).

Run: python benchmarks/bench_compress.py   (writes the "compress" section of BENCHMARKS.md)
Latency: eval mode, no grad, medians of interleaved repeats (dense and compressed alternate).
"""
from __future__ import annotations

import time

import torch
from torch import nn

from _report import machine_line, write_section
from sparsefw.compress import (count_flops, count_parameters, factorize, measure_latency, prune,
                               remove_filters)
from sparsefw.models import build_model

REPEATS = {1: 60, 64: 40}


def resnet20() -> nn.Module:
    torch.manual_seed(0)
    model = build_model("resnet20", num_classes=10, in_channels=3, image_size=32).eval()
    with torch.no_grad():  # trained-like BN statistics so removed channels emit constants
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.5)
                m.running_var.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.5)
    return model


def main() -> None:
    torch.set_num_threads(2)
    model = resnet20()
    x1, x64 = torch.randn(1, 3, 32, 32), torch.randn(64, 3, 32, 32)
    variants = {}
    for label, make in [("90% unstructured (global)", lambda: prune(model, 0.9)),
                        ("filters removed 30%", lambda: remove_filters(model, 0.3, x1)),
                        ("filters removed 50%", lambda: remove_filters(model, 0.5, x1)),
                        ("filters removed 70%", lambda: remove_filters(model, 0.7, x1)),
                        ("coupled channels removed 50%", lambda: remove_filters(model, 0.5, x1, coupled=True)),
                        ("rank kept 50%, weights rule", lambda: factorize(model, rank=0.5, cost="params")),
                        ("rank kept 25%, weights rule", lambda: factorize(model, rank=0.25, cost="params")),
                        ("rank kept 50%, timed at batch 64", lambda: factorize(model, rank=0.5, example_inputs=x64)),
                        ("rank kept 25%, timed at batch 64", lambda: factorize(model, rank=0.25, example_inputs=x64))]:
        start = time.perf_counter()
        variants[label] = make()
        variants[label].compress_seconds = time.perf_counter() - start
    dense_params, dense_flops = count_parameters(model), count_flops(model, x1)
    rows = []
    for label, compressed in variants.items():
        ratios = []
        for batch, repeats in REPEATS.items():
            x = torch.randn(batch, 3, 32, 32)
            dense_ms, comp_ms = measure_latency([model, compressed], x, warmup=5, repeats=repeats)
            ratios.append(f"{dense_ms:.2f} → {comp_ms:.2f} ms ({dense_ms / comp_ms:.2f}×)")
        params = count_parameters(compressed)
        nonzero = sum(int((p != 0).sum()) for p in compressed.parameters())
        flops = count_flops(compressed, x1)
        rows.append(f"| {label} | {params / dense_params:.3f} | {nonzero / dense_params:.3f} | "
                    f"{flops / dense_flops:.3f} | {ratios[0]} | {ratios[1]} | "
                    f"{compressed.compress_seconds:.2f} s |")
    table = "\n".join(rows)
    write_section("compress", f"""## One-shot compression: size, FLOPs, CPU latency (ResNet-20)

Command: `python benchmarks/bench_compress.py`. {machine_line()}
ResNet-20 ({dense_params:,} parameters, {dense_flops / 1e6:.1f} MFLOPs per 32×32 image by
torch.utils.flop_counter), random weights with randomised BN statistics. Ratios are compressed /
dense; latency is the median over interleaved repeats ({REPEATS[1]} at batch 1, {REPEATS[64]} at
batch 64), eval mode, no grad; speed-up = dense / compressed.

| compression | params | non-zero params | FLOPs | latency batch 1 | latency batch 64 | time to compress |
|---|---|---|---|---|---|---|
{table}

Unstructured pruning stores zeros in dense tensors: same parameter count, same FLOPs, same latency
(any difference above is noise). Filter removal computes exactly the masked model; its extra work
(Assemble put-backs at residual adds, border corrections of zero-padded convs, cached per input
size) is part of the latency shown. Factorized layers below break-even are left dense.

Reading (four runs of this command on 2026-12-01, idle machine, 2 threads; the table is the last;
dense latency itself wanders by ±15 % between rows at batch 64, so compare each row's own ratio).
Per-layer filter removal keeps the residual streams at full width and puts removed channels back
before every add (`Assemble`): at batch 64 it gains 0.96–1.2× at 30 %, 1.2–1.4× at 50 % and
1.7–1.9× at 70 % (FLOPs 2–7× fewer); at batch 1 it is slower (0.7–0.9×), because ResNet-20 on one
32×32 image is dominated by per-op overhead and the put-backs add ops. Coupled removal
(`coupled=True`) shrinks the streams themselves: at 50 % 1.8–2.3× faster at batch 64 and 1.5–1.6× at
batch 1, as fast as the net built at those widths (section "Coupled channel removal",
`benchmarks/bench_coupled.py`, 1 thread). Factorization by the weights rule alone
(`cost="params"`: every conv below break-even) is slower than dense at batch 64 (0.73–0.94×): two
thin convs run slower than one narrow conv in oneDNN at 16–64 channels. Timed at batch 64
(`example_inputs` given, the default rule then), `factorize` keeps only the layers whose pair is
≥ 5 % faster there: 1.06–1.13× at batch 64 with fewer parameters saved (0.60–0.64 / 0.34 of them
instead of 0.57 / 0.29), and 0.95–1.01× at batch 1, a size it was not timed at (time it at the
batch you serve; section "Latency-aware factorization").
""")
    print(table)


if __name__ == "__main__":
    main()
