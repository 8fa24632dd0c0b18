"""Robustness across tasks: SGD + weight decay against SFW at the library defaults, on tasks on which
no setting was ever tuned.

Run:  python benchmarks/bench_robustness.py [--shard 0/2] [--budget 4×]   (appends to
                                                 results/robustness_runs.jsonl; two shards use two cores)
      python benchmarks/bench_robustness.py --report       (the "robustness" section + robustness.png)
      python benchmarks/bench_robustness.py --quick        (one seed, one epoch, temporary JSONL)

SFW is `sparsefw.SFW(sparsefw.constrain(model, mode, example_inputs=x))` with nothing else set: the
defaults of the library (lr, momentum, the step rule, width, k, the radius rule of biases and BN γ/β).
SGD: lr 0.1, momentum 0.9, weight decay 5e-4. Every method trains each task with seeds 0, 1, 2 under
the same budget and linear LR decay to 0, at two budgets: 1× (the epochs below, 190-630 steps) and 4×
(four times the epochs). The radius defaults were chosen on Fashion-MNIST with the small CNN
(bench_radius_rule.py), the step rule on digits, bars and the ResNet at 1× (docs/tuning.md); the
Fashion-MNIST CNN (HELD_OUT) was added after that choice to check it on a task it was not chosen on. Compression: the library's one-shot calls at the issue's
levels (benchmarks/_tasks.py), global magnitude pruning, L1 filter removal in every conv, per-conv
truncated SVD (`layers="conv"`), no retraining, no BN recalibration.
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import tempfile
from pathlib import Path

import torch
from torch import nn

import _tasks as T
from _report import machine_line, write_section
from _runlog import read_jsonl
from sparsefw.data import get_datasets
from sparsefw.experiments.io import save_figure
from sparsefw.models import build_model
from sparsefw.models.resnet import ResNet

HERE = Path(__file__).resolve().parent
#: budget name → multiple of each task's epochs
BUDGETS = {"1×": 1, "4×": 4}
RESULTS = HERE / "results"
METHODS = ("sgd_wd", "k_support", "group_k_support", "spectral_k_support")
#: the task added after the step rule was chosen, to check it on data and a net it was not chosen on
HELD_OUT = "Fashion-MNIST, CNN 16-16-32-32 (BN), held out"
SEEDS = (0, 1, 2)
# goals of the issue: (column, kept share ≥, the mode whose SFW model must meet it)
GOALS = (("90% unstr.", 0.95, "k_support"), ("50% filters", 0.90, "group_k_support"),
         ("50% rank kept", 0.90, "spectral_k_support"))


def _tensors(ds, n: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    idx = torch.arange(len(ds) if n is None else min(n, len(ds)))
    return ds[idx]


class PlainCNN(nn.Module):
    """Three 3×3 convs with biases and ReLU, no normalisation layer, max-pools, GAP, Linear."""

    def __init__(self, in_channels: int, num_classes: int, widths=(16, 32, 32)):
        super().__init__()
        a, b, c = widths
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, a, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(a, b, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(b, c, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1))
        self.classifier = nn.Linear(c, num_classes)

    def forward(self, x):
        return self.classifier(torch.flatten(self.features(x), 1))


def bars(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A task of our own: 3×12×20 noisy images holding one bar — horizontal or vertical, red or
    blue (4 classes) — of random length and position, with a distractor bar in green."""
    g = torch.Generator().manual_seed(seed)
    x = 0.5 * torch.randn(n, 3, 12, 20, generator=g)
    y = torch.randint(0, 4, (n,), generator=g)
    for i in range(n):
        vertical, channel = int(y[i]) % 2, 0 if y[i] < 2 else 2
        for ch, vert in ((channel, vertical), (1, int(torch.randint(0, 2, (1,), generator=g)))):
            length = int(torch.randint(5, 10, (1,), generator=g))
            r = int(torch.randint(0, 12 - (length if vert else 1) + 1, (1,), generator=g))
            c = int(torch.randint(0, 20 - (1 if vert else length) + 1, (1,), generator=g))
            if vert:
                x[i, ch, r:r + length, c] += 2.0
            else:
                x[i, ch, r, c:c + length] += 2.0
    return x, y


def tasks() -> list[T.Task]:
    digits_tr, digits_te, _ = get_datasets("digits")
    mnist_tr, mnist_te, _ = get_datasets("mnist5k")
    fa_tr, fa_te, _ = get_datasets("fashion_mnist", subset=(4000, 2000))
    return [
        T.Task("digits (8×8), CNN 16-16-32-32 (BN)", lambda: build_model("cnn", 10, 1, widths=[16, 16, 32, 32]),
               _tensors(digits_tr), _tensors(digits_te), 10, epochs=10, batch_size=32),
        T.Task("MNIST-5k, MLP 784-300-100-10", lambda: build_model("mlp", 10, 1, image_size=28),
               _tensors(mnist_tr), _tensors(mnist_te), 10, epochs=5),
        T.Task("MNIST-5k, CNN without BN 16-32-32", lambda: PlainCNN(1, 10), _tensors(mnist_tr), _tensors(mnist_te),
               10, epochs=5),
        T.Task("Fashion-MNIST, ResNet 8-16-32 ×1 block (BN)", lambda: ResNet((8, 16, 32), (1, 1, 1), 1, 10),
               _tensors(fa_tr), _tensors(fa_te), 10, epochs=4),
        T.Task("bars 3×12×20 (own, 4 classes), CNN 8-8-16-16 (BN)",
               lambda: build_model("cnn", 4, 3, widths=[8, 8, 16, 16]), bars(3000, 0), bars(1000, 1), 4, epochs=4),
        T.Task(HELD_OUT, lambda: build_model("cnn", 10, 1, widths=[16, 16, 32, 32]),
               _tensors(fa_tr), _tensors(fa_te), 10, epochs=4),
    ]


def run(jsonl: Path, shard: tuple[int, int], seeds=SEEDS, epochs: int | None = None, budget: str = "1×",
        old_rule: bool = False) -> None:
    """Train and sweep every (task, method, seed) of this shard not yet in `jsonl`; `old_rule`: only the
    SFW methods on the held-out task, with `fixed_step="optimizer"` (the defaults before the step rule),
    recorded with "rule": "optimizer"."""
    chosen = [t for t in tasks() if not old_rule or t.name == HELD_OUT]
    methods = METHODS[1:] if old_rule else METHODS
    jobs = [(task, method, seed) for task in chosen for method in methods for seed in seeds]
    i, n = shard
    for task in chosen:
        task.epochs = epochs if epochs is not None else task.epochs * BUDGETS[budget]
    extra = {"rule": "optimizer"} if old_rule else {}
    for task, method, seed in jobs[i::n]:

        def one():
            model, seconds = T.train(task, method, seed, constraint={"fixed_step": "optimizer"} if old_rule else None)
            return {"seconds": seconds, "scores": T.sweep(task, model)}
        T.run_logged(jsonl, {"task": task.name, "method": method, "seed": seed, "budget": budget, **extra}, one)


def budget_of(record: dict) -> str:
    """The budget a record was trained at ("1×" for records written before budgets existed)."""
    return record.get("budget", "1×")


def summary(records: list[dict]) -> dict:
    """`_tasks.summary` of this benchmark's methods and levels (records of one budget)."""
    return T.summary(records, METHODS)


def goal_lines(s: dict) -> list[str]:
    out = []
    for task in dict.fromkeys(t for t, _ in s):
        sgd = s.get((task, "sgd_wd"))
        if sgd is None:
            continue
        parts = []
        for col, keep, mode in GOALS:
            sfw = s.get((task, mode))
            if sfw is None or sfw[col] is None:
                parts.append(f"{col}: {'not run' if sfw is None else 'n/a (no conv)'}")
                continue
            gap = sgd["dense"][0] - sfw["dense"][0]
            k, k_sgd = sfw[col][0], sgd[col][0]
            parts.append(f"{col} ({mode}): dense {'within' if gap <= 0.015 else 'NOT within'} 1.5 points "
                         f"({100 * gap:+.1f}), kept {k:.2f} {'≥' if k >= keep else '<'} {keep:.2f} "
                         f"({'met' if k >= keep else 'NOT met'}), {k / k_sgd:.1f}× SGD's {k_sgd:.2f} "
                         f"({'met' if k >= 2 * k_sgd else 'NOT met'})")
        out.append(f"- **{task}**: " + "; ".join(parts))
    return out


def plot(s: dict, path: Path) -> Path:
    """One panel per task: kept share at each level (bars), one colour per method, error bars = spread."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    task_names = list(dict.fromkeys(t for t, _ in s))
    cols = [c for _, _, c in T.LEVELS]
    fig, axes = plt.subplots(2, (len(task_names) + 1) // 2, figsize=(5.2 * ((len(task_names) + 1) // 2), 7),
                             squeeze=False)
    for ax, task in zip(axes.flat, task_names):
        T.kept_bars(ax, s, task, METHODS, cols)
        ax.set_ylim(0, 1.45)
        ax.set_title(task, fontsize=9)
        ax.set_ylabel("kept share of dense metric")
        ax.legend(fontsize=6, loc="upper left", framealpha=0.5)
    for ax in list(axes.flat)[len(task_names):]:
        ax.axis("off")
    fig.tight_layout()
    try:
        return save_figure(path, fig)
    finally:
        plt.close(fig)


def budget_table(s: dict) -> list[str]:
    """The markdown rows of one budget's summary."""
    cols = [c for _, _, c in T.LEVELS]
    lines = ["| task | method | seeds | dense | " + " | ".join(cols) + " |", "|---|---|---|---|" + "---|" * len(cols)]
    for (task, method), cell in s.items():
        d = cell["dense"]
        lines.append(f"| {task} | {method} | {cell['seeds']} | {d[0]:.3f} ± {d[1]:.3f} | "
                     + " | ".join(T.cell(cell[c]) for c in cols) + " |")
    return lines


def report(jsonl: Path, png: Path, notes: list[str] | None = None) -> str:
    """The section: per budget a table, a plot (`png`, suffixed by the budget) and the goal lines."""
    records = read_jsonl(jsonl)
    parts = []
    old_rule = [r for r in records if r.get("rule") == "optimizer"]
    records = [r for r in records if "rule" not in r]
    for budget, times in BUDGETS.items():
        s = summary([r for r in records if budget_of(r) == budget])
        if not s:
            continue
        path = png if times == 1 else png.with_name(f"{png.stem}_{times}x{png.suffix}")
        plot(s, path)
        parts += [f"### Budget {budget} (each task's epochs × {times})", "", *budget_table(s), "",
                  f"![kept share per task and level, budget {budget}](benchmarks/results/{path.name})", "",
                  f"Goals of the issue at {budget} (means over seeds; SFW in the mode made for each structure):", "",
                  *goal_lines(s), ""]
        before = summary([r for r in old_rule if budget_of(r) == budget])
        if before:
            parts += [f"The held-out task at {budget} with `fixed_step=\"optimizer\"` (the defaults before the step "
                      f"rule; `--old-rule`):", "", *budget_table(before), ""]
    minutes = sum(r["seconds"] for r in records) / 60
    return "\n".join([
        "## Robustness across tasks, at the library defaults (`benchmarks/bench_robustness.py`)", "",
        f"Command: `python benchmarks/bench_robustness.py --shard 0/2` and `--shard 1/2` in parallel, the same "
        f"with `--budget 4×` and with `--old-rule` at both budgets, then `--report` ({minutes:.0f} min of training in all; other agents' processes "
        f"shared the two cores). {machine_line()}", "",
        __doc__.split("\n\n", 2)[2].strip().split("\n\n")[0], "",
        "Cells: dense test accuracy, and the kept share (compressed / dense) after "
        "one-shot compression, mean ± half the range over the seeds; — where the model has no conv.", "",
        *parts, *(["### Reading", "", *notes] if notes else [])])


NOTES = [  # the "Reading" paragraph, written after the runs of 2026-12-05 (numbers from the tables above)
    "- **Goals met at 1× / 4×, over the five tasks the rule was chosen on: dense within 1.5 points of SGD in 8 / 10 "
    "of 13 task × structure cells, the keep goal in 8 / 11 of 13, twice SGD's kept share in 6 / 6 of 13** (the old "
    "defaults, gradient-rescaled everywhere, file `results/robustness_runs_2026-12-01.jsonl`: 8, 6 and 2 of 13 at "
    "1×). With the held-out task: 8 / 10, 9 / 13 and 9 / 9 of 16. Where SGD itself keeps ≥ 0.5 (the MLP, the CNN "
    "without BN, low rank on bars and digits) twice its share is impossible.",
    "- **The step rule lifted the BN nets at 1×**: digits 0.53 → 0.98 at 90% sparsity, 0.15 → 0.76 at 50% filters, "
    "0.93 → 1.00 at 50% rank; bars 0.87 → 1.00, 0.63 → 0.83, 0.97 → 1.00; the ResNet 0.24 → 0.50, 0.13 → 0.17, "
    "0.64 → 0.89 — at the old default's dense accuracy. At 4× every goal is met on digits and bars (kept 0.98-1.00).",
    "- **Nets without normalisation are unchanged** (no parameter there has a scale the model ignores, so every "
    "tensor keeps the gradient-rescaled step; a fixed step everywhere stops them training, docs/tuning.md): "
    "robust at both budgets (0.98-1.00 at their structures), with k-support and group 3.1-3.6 points below SGD "
    "dense at 1× and within 1.5 at 4×.",
    "- **Where it falls short: the ResNet.** Dense stays 3.8-6.7 points below SGD at both budgets (as with the old "
    "defaults: the gap is not the step rule's), and 90% sparsity (0.50 / 0.58) and 50% filters (0.17 / 0.28) stay "
    "far below the goals, while SFW still keeps 2-4× SGD's share. The rule leaves the γ, β of every BN whose output "
    "joins a residual add (or reaches the classifier) on the rescaled step, since their scale is what the stream "
    "adds; those BNs rescale the filters before them back after removal (docs/tuning.md 'BN hides shrunken "
    "filters'). Giving them the fixed step too kept 0.90 at 90% sparsity but cost up to 18 points of dense "
    "accuracy (docs/tuning.md 'The step rule'). Per-layer filter removal on plain BN nets needs steps: 0.76 / 0.83 "
    "at 1× on digits / bars, 0.99 / 0.99 at 4×.",
    "- **The held-out task** (Fashion-MNIST CNN 16-16-32-32, added after the rule was chosen) confirms the "
    "robustness and shows its price. Kept at 1× / 4×: 0.89 / 1.00 at 90% sparsity, 0.32 / 0.87 at 50% filters, "
    "0.99 / 0.99 at 50% rank (SGD 0.13-0.45; with `fixed_step=\"optimizer\"`, i.e. the old defaults, 3 seeds: "
    "0.22, 0.15, 0.68 at 1×). But dense accuracy fell: 0.691 / 0.709 / 0.724 (k / group / spectral) at 1× "
    "against 0.742 / 0.752 / 0.754 with the old defaults, and 0.760 / 0.780 / 0.801 at 4× against "
    "0.828 / 0.841 / 0.838 (kept 0.30 / 0.27 / 0.75); SGD 0.783 / 0.860. On digits, bars and the ResNet the rule cost 0-3 points. The fixed η = 0.02 "
    "moves the direction of every normalised filter by ≈ η per step all run long, which a long budget does not "
    "need for its decay (Σ η grows with the steps): a step that shrinks with the budget is the next thing to "
    "measure. `fixed_step=\"optimizer\"` (config `optimizer.fixed_step: optimizer`) restores the old dense "
    "accuracy and its fragility.",
    "- **Seeds**: near a cliff the half-range over three seeds reaches 0.15-0.29 (ResNet k-support at 90%, 4×: "
    "0.58 ± 0.29).",
    "- M2NIST segmentation is not in this benchmark yet (every method predicted background only at its old budget).",
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shard", default="0/1", help="i/n: every n-th run starting at i")
    ap.add_argument("--budget", default="1×", choices=list(BUDGETS), help="multiple of each task's epochs")
    ap.add_argument("--old-rule", action="store_true",
                    help="the held-out task's SFW runs with fixed_step='optimizer' (the defaults before the step rule)")
    ap.add_argument("--report", action="store_true")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)
    if args.quick:
        with tempfile.TemporaryDirectory() as tmp:
            jsonl = Path(tmp) / "quick.jsonl"
            run(jsonl, (0, 1), seeds=(0,), epochs=1)
            print(report(jsonl, Path(tmp) / "robustness.png"))
        return
    RESULTS.mkdir(exist_ok=True)
    jsonl = RESULTS / "robustness_runs.jsonl"
    if not args.report:
        run(jsonl, tuple(map(int, args.shard.split("/"))), budget=args.budget, old_rule=args.old_rule)
    write_section("robustness", report(jsonl, RESULTS / "robustness.png", NOTES))


if __name__ == "__main__":
    main()
