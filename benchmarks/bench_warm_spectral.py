"""Does the warm-started spectral LMO change training or robustness? (issue 17 §5)

Small CNN on a class-stratified Fashion-MNIST subset, SFW spectral-k-support (k = 30 %, width 10,
lr 0.1 → 0 linear, momentum 0.9, gradient rescaling, batch 128), exact LMO vs
`SFW(spectral_refresh=R)`, several seeds; dense test accuracy and accuracy after one-shot
factorization of every conv keeping 50 % and 30 % of the rank (`sparsefw.compress.factorize`,
layers="conv"). Also the LMO shortfall 1 − ‖P_U m‖_F/‖Σ_k(m)‖₂ of the warm runs, measured on every
spectral region every `--probe` steps against an exact top-k SVD.

    python benchmarks/bench_warm_spectral.py [--seeds 3] [--epochs 2] [--train 10000] [--refresh 50]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import machine_line, write_section  # noqa: E402

import sparsefw  # noqa: E402
from sparsefw.compress import factorize  # noqa: E402
from sparsefw.data import get_datasets  # noqa: E402
from sparsefw.models import build_model  # noqa: E402

KEEP = (0.5, 0.3)  # fraction of the rank kept by the factorization


def _accuracy(model: nn.Module, loader: DataLoader) -> float:
    model.eval()
    right = total = 0
    with torch.no_grad():
        for x, y in loader:
            right += int((model(x).argmax(1) == y).sum())
            total += len(y)
    model.train()
    return right / total


def _shortfalls(opt: sparsefw.SFW) -> list[float]:
    """1 − ‖P_U m‖/‖Σ_k(m)‖ of every spectral region's current momentum on its stored basis."""
    out = []
    for group in opt.param_groups:
        state = opt.state[group["params"][0]]
        if "spectral_basis" not in state:
            continue
        m = state["momentum_buffer"].reshape(group["params"][0].shape[0], -1).double()
        wide = m if m.shape[0] <= m.shape[1] else m.mT
        u = state["spectral_basis"].double()
        exact = torch.linalg.svdvals(wide)[:group["constraint"].k].norm()
        out.append(1 - float((wide.mT @ u).norm() / exact))
    return out


def run(seed: int, refresh: int | None, args, train, test) -> dict:
    model = build_model("cnn", num_classes=10, in_channels=1, seed=seed)
    # norm_radius="init": the radius rule its recorded section ran with (it compares LMOs, not radii)
    groups = sparsefw.constrain(model, "spectral_k_support", k=0.3, width=10.0, norm_radius="init")
    opt = sparsefw.SFW(groups, lr=0.1, momentum=0.9,
                       spectral_refresh=refresh)
    loader = DataLoader(train, batch_size=128, shuffle=True, generator=torch.Generator().manual_seed(seed))
    steps = args.epochs * len(loader)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 1 - t / steps)
    shortfalls, step_time, step = [], 0.0, 0
    for _ in range(args.epochs):
        for x, y in loader:
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            start = time.perf_counter()
            opt.step()
            step_time += time.perf_counter() - start
            sched.step()
            step += 1
            if refresh and step % args.probe == 0:
                shortfalls += _shortfalls(opt)
    test_loader = DataLoader(test, batch_size=256)
    result = {"dense": _accuracy(model, test_loader), "step_ms": 1e3 * step_time / steps,
              "shortfall_mean": statistics.mean(shortfalls) if shortfalls else float("nan"),
              "shortfall_max": max(shortfalls) if shortfalls else float("nan")}
    for keep in KEEP:
        result[f"rank {keep:.0%}"] = _accuracy(factorize(model, rank=keep, layers="conv"), test_loader)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--train", type=int, default=10000)
    parser.add_argument("--refresh", type=int, default=50)
    parser.add_argument("--probe", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    train, test, _ = get_datasets("fashion_mnist", subset=(args.train, 2000))
    results = {}
    cells = [(seed, refresh) for seed in range(args.seeds) for refresh in (None, args.refresh)]
    for seed, refresh in tqdm(cells, desc="runs"):
        results[(seed, refresh)] = run(seed, refresh, args, train, test)
    metrics = ["dense", *(f"rank {keep:.0%}" for keep in KEEP)]
    rows = []
    for refresh in (None, args.refresh):
        label = "exact (Gram-eigh every step)" if refresh is None else f"warm, exact every {refresh} steps"
        runs = [results[(seed, refresh)] for seed in range(args.seeds)]
        cells_text = " | ".join(
            f"{statistics.mean(r[m] for r in runs):.3f} ({' / '.join(f'{r[m]:.3f}' for r in runs)})" for m in metrics)
        short = ("–" if refresh is None else
                 f"{statistics.mean(r['shortfall_mean'] for r in runs):.2e} / {max(r['shortfall_max'] for r in runs):.2e}")
        rows.append(f"| {label} | {cells_text} | {statistics.mean(r['step_ms'] for r in runs):.2f} | {short} |")
    load = os.getloadavg()
    text = "\n".join([
        "## Warm-started spectral LMO: training and robustness (`benchmarks/bench_warm_spectral.py`)",
        "",
        f"Command: `python benchmarks/bench_warm_spectral.py --seeds {args.seeds} --epochs {args.epochs} "
        f"--train {args.train} --refresh {args.refresh} --probe {args.probe} --threads {args.threads}`. "
        f"{machine_line()} Load average (1/5/15 min) at the end: {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} "
        "(shared machine: step times are indicative only).",
        "",
        f"Small CNN, Fashion-MNIST ({args.train} training images, 2000 test, class-stratified), SFW "
        "spectral-k-support k = 30 %, width 10, lr 0.1 → 0 linear, momentum 0.9, batch 128, "
        f"{args.epochs} epochs. Test accuracy: mean (per seed), dense and after factorizing every conv to "
        "50 % / 30 % of its rank without retraining. Shortfall: 1 − ‖P_U m‖_F/‖Σ_k(m)‖₂ of the stored basis "
        f"on the current momentum, every {args.probe} steps, every spectral region (mean / max).",
        "",
        "| LMO | dense | rank 50 % | rank 30 % | SFW step ms | shortfall mean / max |",
        "|---|---|---|---|---|---|",
        *rows,
    ])
    print(text)
    write_section("warm_spectral", text)


if __name__ == "__main__":
    main()
