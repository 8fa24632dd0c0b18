"""Training for coupled channel removal: coupled-group k-support SFW vs per-layer group-k-support SFW
vs SGD, each followed by coupled removal (`remove_filters(coupled=True)`, joint L2 norm) at
30/50/70 % without retraining.

Run: OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/bench_coupled_training.py
(writes the "coupled_training" section of BENCHMARKS.md and benchmarks/results/coupled_training.png)

Small scale (2 CPU cores shared): the small CNN at widths 16-16-32-32 on a Fashion-MNIST subset
(28×28), a few epochs, 2 seeds. Latency: eval forward at batch 64, medians of interleaved rounds;
the removed nets of one amount have the same widths whatever the training, so latency is measured
once per amount.
"""
from __future__ import annotations

import argparse
import statistics

import matplotlib
import torch
import torch.nn.functional as F
from tqdm import tqdm

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from _report import BENCHMARKS_MD, machine_line, write_section  # noqa: E402
import sparsefw  # noqa: E402
from sparsefw.compress import channel_groups, measure_latency, remove_filters  # noqa: E402
from sparsefw.data.fashion import load_fashion_mnist  # noqa: E402
from sparsefw.models.cnn import SmallCNN  # noqa: E402

AMOUNTS = (0.0, 0.3, 0.5, 0.7)
METHODS = ("coupled_group_k_support", "group_k_support", "sgd")
WIDTHS = (16, 16, 32, 32)


def train(method: str, seed: int, x, y, epochs: int, k: float, lr: float):
    torch.manual_seed(seed)
    model = SmallCNN(1, 10, WIDTHS)
    if method == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    else:
        extra = {"example_inputs": x[:2]} if method == "coupled_group_k_support" else {}
        # norm_radius="init": the radius rule of 1-D parameters its recorded section ran with
        groups = sparsefw.constrain(model, method, k=k, width=10.0, norm_radius="init", **extra)
        opt = sparsefw.SFW(groups, lr=lr, momentum=0.9)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x), 64):
            batch = order[i:i + 64]
            opt.zero_grad()
            F.cross_entropy(model(x[batch]), y[batch]).backward()
            opt.step()
    return model.eval()


def dropped_share(model, x, amount: float = 0.5) -> float:
    """Σ over spaces of the squared joint norms of the ⌊amount·C⌋ weakest channels, over Σ of all."""
    dropped = total = 0.0
    for group in channel_groups(model, x):
        squares = group.joint_norms(model, "l2").double() ** 2
        dropped += float(squares.sort().values[:int(amount * group.size)].sum())
        total += float(squares.sum())
    return dropped / total


@torch.no_grad()
def accuracy(model, x, y) -> float:
    return float(sum((model(x[i:i + 500]).argmax(1) == y[i:i + 500]).sum() for i in range(0, len(x), 500))) / len(x)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--train", type=int, default=8000)
    parser.add_argument("--test", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--k", type=float, default=0.5)
    parser.add_argument("--lr", type=float, default=0.3)
    args = parser.parse_args()
    train_set, test_set, _ = load_fashion_mnist()
    x, y = train_set.images[:args.train], train_set.targets[:args.train]
    xt, yt = test_set.images[:args.test], test_set.targets[:args.test]
    results = {}                                     # (method, amount) -> accuracies over seeds
    shares = {}                                      # method -> dropped_share over seeds
    removed_of_seed0 = {}
    jobs = [(m, s) for s in range(args.seeds) for m in METHODS]
    for method, seed in tqdm(jobs, desc="train"):
        model = train(method, seed, x, y, args.epochs, args.k, args.lr)
        shares.setdefault(method, []).append(dropped_share(model, xt[:2]))
        for amount in AMOUNTS:
            net = model if amount == 0 else remove_filters(model, amount, xt[:2], criterion="l2", coupled=True)
            results.setdefault((method, amount), []).append(accuracy(net, xt, yt))
            if seed == 0 and method == METHODS[0]:
                removed_of_seed0[amount] = net
    latency = dict(zip(AMOUNTS, measure_latency([removed_of_seed0[a] for a in AMOUNTS], xt[:64], repeats=30)))
    lines = [
        "## Training for coupled channel removal (issue 16)", "",
        f"Command: `OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/bench_coupled_training.py --train {args.train} "
        f"--test {args.test} --epochs {args.epochs} --seeds {args.seeds} --k {args.k} --lr {args.lr}`", "",
        f"{machine_line()} Other helpers' processes were running (load average ≈ 1.5-2 on 2 cores).", "",
        f"SmallCNN widths {WIDTHS} on Fashion-MNIST (first {args.train} train / {args.test} test images), "
        f"{args.epochs} epochs, batch 64, {args.seeds} seeds. SFW: lr {args.lr}, momentum 0.9, k {args.k}, width 10 "
        "(coupled: one region per coupled channel space; per-layer: `group_k_support`); SGD lr 0.1, "
        "momentum 0.9. Coupled removal of ⌊amount·C⌋ channels of every space by joint L2 norm, no "
        "retraining. Test accuracy: mean (min–max) over seeds; latency: eval, batch 64, median ms.", "",
        "| removed | latency ms (speed-up) | " + " | ".join(METHODS) + " |",
        "|---|---|" + "---|" * len(METHODS)]
    for amount in AMOUNTS:
        cells = [f"{statistics.mean(results[(m, amount)]):.3f} ({min(results[(m, amount)]):.3f}–"
                 f"{max(results[(m, amount)]):.3f})" for m in METHODS]
        lines.append(f"| {amount:.0%} | {latency[amount]:.2f} ({latency[0.0] / latency[amount]:.2f}×) | "
                     + " | ".join(cells) + " |")
    lines += ["", "Share of the squared joint channel norms (all member slices, `ChannelGroup.joint_norms`) "
              "held by the channels 50 % removal drops, mean over seeds: "
              + ", ".join(f"{m} {statistics.mean(shares[m]):.3f}" for m in METHODS) + "."]
    figure = BENCHMARKS_MD.parent / "benchmarks" / "results" / "coupled_training.png"
    figure.parent.mkdir(parents=True, exist_ok=True)
    plt.figure(figsize=(5, 3.5))
    for method in METHODS:
        plt.plot([latency[a] for a in AMOUNTS], [statistics.mean(results[(method, a)]) for a in AMOUNTS], "o-",
                 label=method)
    plt.xlabel("latency, batch 64 (ms)")
    plt.ylabel("test accuracy")
    plt.legend()
    plt.tight_layout()
    plt.savefig(figure.with_suffix(".tmp.png"))
    figure.with_suffix(".tmp.png").replace(figure)
    lines += ["", f"Plot: `benchmarks/results/{figure.name}`."]
    print("\n".join(lines))
    write_section("coupled_training", "\n".join(lines))


if __name__ == "__main__":
    main()
