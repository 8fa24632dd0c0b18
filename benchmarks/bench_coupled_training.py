"""Training for coupled channel removal (issue 16): coupled-group k-support SFW vs per-layer
group-k-support SFW vs SGD vs SGD + a group-lasso penalty on the coupled groups, each followed by
coupled removal (`remove_filters(coupled=True)`) at 30/50/70 % without retraining.

Run: OMP_NUM_THREADS=2 PYTHONPATH=src python benchmarks/bench_coupled_training.py
(writes the "coupled_training" section of BENCHMARKS.md, benchmarks/results/coupled_training.json
and benchmarks/results/coupled_training.png; `--name` for another budget's section and files)

Tasks: ResNet-20 on Fashion-MNIST 32×32×3 and the small CNN (widths 16-16-32-32) on 28×28
Fashion-MNIST, a subset of the training set, linear learning-rate decay to 0, batch 64, several
seeds. Every method runs at the library's defaults (`constrain(model, mode)` with only k and the
example inputs given) except the baselines' own settings, listed in the section. Latency: eval
forward at batch 64, medians of interleaved rounds; the removed nets of one amount have the same
widths whatever the training, so latency is measured once per amount and task.
"""
from __future__ import annotations

import argparse
import json
import math
import statistics

import matplotlib
import torch
import torch.nn.functional as F
from tqdm import tqdm

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from _report import BENCHMARKS_MD, machine_line, write_section  # noqa: E402
import sparsefw  # noqa: E402
from sparsefw.compress import measure_latency, remove_filters  # noqa: E402
from sparsefw.data.fashion import load_fashion_mnist  # noqa: E402
from sparsefw.experiments.evaluation import evaluate  # noqa: E402
from sparsefw.experiments.io import write_json  # noqa: E402
from sparsefw.models.cnn import SmallCNN  # noqa: E402
from sparsefw.models.resnet import cifar_resnet  # noqa: E402
from sparsefw.optim import coupled_group_lasso_penalty  # noqa: E402

AMOUNTS = (0.0, 0.3, 0.5, 0.7)
COUPLED = "coupled SFW k="
BASELINES = ("per-layer SFW", "SGD")
LASSO = "SGD + coupled group lasso λ="
REUSED_ARGS = ("train", "test", "epochs", "seeds", "k", "lr")   # a stored run with these equal is reused
TASKS = {"ResNet-20": (lambda: cifar_resnet(20, 3, 10), True),
         "small CNN": (lambda: SmallCNN(1, 10, (16, 16, 32, 32)), False)}
SGD = {"lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4}
RESULTS = BENCHMARKS_MD.parent / "benchmarks" / "results"


def make_optimizer(method: str, model, example, args):
    if method.startswith(COUPLED):
        k = float(method[len(COUPLED):])
        groups = sparsefw.constrain(model, "coupled_group_k_support", k=k, example_inputs=example)
        return sparsefw.SFW(groups, lr=args.lr, momentum=0.9), None
    if method == "per-layer SFW":
        return sparsefw.SFW(sparsefw.constrain(model, "group_k_support", k=args.k), lr=args.lr, momentum=0.9), None
    penalty = None
    if method.startswith(LASSO):
        lam = float(method[len(LASSO):])
        init = {name: t.clone() for name, t in model.state_dict().items()}
        groups = sparsefw.constrain(model, "coupled_group_k_support", k=args.k, example_inputs=example)
        model.load_state_dict(init)             # SGD starts from the init (constrain may have scaled it in)
        penalty = lambda: coupled_group_lasso_penalty(groups, lam)  # noqa: E731
    return torch.optim.SGD(model.parameters(), **SGD), penalty


def train_loop(model, opt, x, y, epochs: int, seed: int, penalty=None):
    """`epochs` epochs of batch 64 in a seeded order, the learning rate (every group's) decaying
    linearly to 0; `penalty()` is added to the loss when given. Returns the model in eval mode."""
    steps = epochs * math.ceil(len(x) / 64)
    schedule = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: 1 - i / steps)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x), 64):
            batch = order[i:i + 64]
            opt.zero_grad()
            loss = F.cross_entropy(model(x[batch]), y[batch])
            if penalty is not None:
                loss = loss + penalty()
            loss.backward()
            opt.step()
            schedule.step()
    return model.eval()


def train(task: str, method: str, seed: int, x, y, args):
    torch.manual_seed(seed)
    model = TASKS[task][0]()
    opt, penalty = make_optimizer(method, model, x[:2], args)
    return train_loop(model, opt, x, y, args.epochs, seed, penalty)


def accuracy(model, x, y) -> float:
    loader = [(x[i:i + 250], y[i:i + 250]) for i in range(0, len(x), 250)]
    return evaluate(model, loader, "classification", 10)["accuracy"]


def data(padded: bool, n_train: int, n_test: int):
    train_set, test_set, _ = load_fashion_mnist(padded=padded)
    x, y = train_set.images[:n_train], train_set.targets[:n_train]
    xt, yt = test_set.images[:n_test], test_set.targets[:n_test]
    if padded:                                  # the stored images are 1 channel; the dataset repeats it
        x, xt = x.expand(-1, 3, -1, -1).contiguous(), xt.expand(-1, 3, -1, -1).contiguous()
    return x, y, xt, yt


def cell(values: list[float]) -> str:
    return f"{statistics.mean(values):.3f} ({min(values):.3f}–{max(values):.3f})"


def plot(results: dict, latency: dict, path) -> None:
    fig, axes = plt.subplots(1, len(results), figsize=(5.5 * len(results), 4.8), squeeze=False)
    axes = axes[0]
    for ax, (task, by_method) in zip(axes, results.items()):
        ms = [latency[task][str(a)] for a in AMOUNTS]
        for method, by_amount in by_method.items():
            means = [statistics.mean(by_amount[str(a)]) for a in AMOUNTS]
            lows = [means[i] - min(by_amount[str(a)]) for i, a in enumerate(AMOUNTS)]
            highs = [max(by_amount[str(a)]) - means[i] for i, a in enumerate(AMOUNTS)]
            ax.errorbar(ms, means, yerr=[lows, highs], fmt="o-", capsize=3, label=method)
        for a, m in zip(AMOUNTS, ms):
            ax.annotate(f"{a:.0%}", (m, 0.05), ha="center", fontsize=8, color="gray")
        ax.set_title(f"{task}: coupled removal, no retraining")
        ax.set_xlabel("latency, batch 64, eval (ms)")
        ax.set_ylabel("test accuracy (mean, min–max over seeds)")
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=3, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.12, 1, 1))
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    tmp.replace(path)


def task_arguments(epochs: int) -> argparse.ArgumentParser:
    """The options both coupled benchmarks take: tasks, data sizes, epochs, k and SFW's lr."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    parser.add_argument("--train", type=int, default=8000)
    parser.add_argument("--test", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=epochs)
    parser.add_argument("--k", type=float, default=0.5)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--note", default="", help="what else ran on the machine (goes into the section)")
    return parser


def main() -> None:
    parser = task_arguments(epochs=6)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--baselines", nargs="*", default=list(BASELINES), choices=list(BASELINES))
    parser.add_argument("--lams", type=float, nargs="*", default=[5e-3, 2e-2],
                        help="group-lasso strengths of the SGD + coupled group lasso baseline, one run each")
    parser.add_argument("--coupled-ks", type=float, nargs="+", default=[0.5, 0.3],
                        help="k of coupled SFW, one run each (--k is the per-layer SFW's)")
    parser.add_argument("--fresh", action="store_true", help="ignore the stored results of an equal earlier run")
    parser.add_argument("--name", default="coupled_training",
                        help="the BENCHMARKS.md section and results/NAME.{json,png} (another name for another budget)")
    args = parser.parse_args()
    methods = [*(f"{COUPLED}{k:g}" for k in args.coupled_ks), *args.baselines, *(f"{LASSO}{lam:g}" for lam in args.lams)]
    results = {t: {m: {str(a): [] for a in AMOUNTS} for m in methods} for t in args.tasks}
    stored = RESULTS / f"{args.name}.json"
    if stored.exists() and not args.fresh:       # complete (task, method) rows of an equal run are kept
        old = json.loads(stored.read_text())
        if all(old["args"].get(key) == getattr(args, key) for key in REUSED_ARGS):
            for task, by_method in old["accuracy"].items():
                for method, by_amount in by_method.items():
                    if task in results and method in results[task] and len(by_amount["0.0"]) == args.seeds:
                        results[task][method] = by_amount
    latency = {}
    for task in args.tasks:
        x, y, xt, yt = data(TASKS[task][1], args.train, args.test)
        todo = [m for m in methods if len(results[task][m]["0.0"]) < args.seeds]
        for method in todo:
            results[task][method] = {str(a): [] for a in AMOUNTS}
        for seed, method in tqdm([(s, m) for s in range(args.seeds) for m in todo], desc=task):
            model = train(task, method, seed, x, y, args)
            for amount in AMOUNTS:
                net = model if amount == 0 else remove_filters(model, amount, xt[:2], criterion="l2", coupled=True)
                results[task][method][str(amount)].append(accuracy(net, xt, yt))
            RESULTS.mkdir(parents=True, exist_ok=True)
            write_json(stored, {"args": vars(args), "accuracy": results, "latency_ms": latency})
        torch.manual_seed(0)
        model = TASKS[task][0]().eval()             # the removed nets' widths do not depend on training
        nets = [model] + [remove_filters(model, a, xt[:2], criterion="l2", coupled=True) for a in AMOUNTS[1:]]
        latency[task] = {str(a): ms for a, ms in zip(AMOUNTS, measure_latency(nets, xt[:64], repeats=40))}
        write_json(stored, {"args": vars(args), "accuracy": results, "latency_ms": latency})
    command = ("OMP_NUM_THREADS=2 PYTHONPATH=src python benchmarks/bench_coupled_training.py "
               f"--tasks {' '.join(repr(t) if ' ' in t else t for t in args.tasks)} --train {args.train} "
               f"--test {args.test} --epochs {args.epochs} --seeds {args.seeds} --k {args.k} --lr {args.lr} "
               f"--coupled-ks {' '.join(f'{k:g}' for k in args.coupled_ks)} "
               f"--baselines {' '.join(repr(b) if ' ' in b else b for b in args.baselines)} "
               f"--lams {' '.join(f'{lam:g}' for lam in args.lams)}"
               + ("" if args.name == "coupled_training" else f" --name {args.name}"))
    lines = [f"## Training for coupled channel removal (issue 16), {args.epochs} epochs", "", f"Command: `{command}`", "",
             f"{machine_line()} {args.note}".rstrip(), "",
             f"First {args.train} training / {args.test} test images of Fashion-MNIST (32×32×3 for ResNet-20, 28×28 "
             f"for the small CNN), {args.epochs} epochs, batch 64, linear decay of the learning rate to 0, seeds "
             f"0–{args.seeds - 1}. Coupled SFW: `constrain(model, \"coupled_group_k_support\", k=k, "
             f"example_inputs=x)` at its defaults (coupled_width 3, coupled_step 0.02), `SFW(lr={args.lr}, momentum=0.9)`; per-layer SFW: "
             f"`constrain(model, \"group_k_support\", k={args.k})`, same SFW; SGD: lr 0.1, momentum 0.9, weight "
             f"decay 5e-4; SGD + coupled group lasso: the same SGD plus λ·Σ_c ‖channel c's output-side slices‖ "
             f"(`optim.coupled_group_lasso_penalty`, λ as named) over the coupled regions (the regions of coupled SFW: one source of truth). Every model then loses "
             "⌊amount·C⌋ channels of every coupled channel space (`remove_filters(coupled=True, criterion=\"l2\")`, "
             "residual streams included), no retraining, no BN recalibration. Test accuracy: mean (min–max) over "
             "seeds; latency: eval forward at batch 64, median ms (speed-up over dense).", ""]
    for task in args.tasks:
        ms = latency[task]
        lines += [f"**{task}**", "", "| removed | latency ms (speed-up) | " + " | ".join(methods) + " |",
                  "|---|---|" + "---|" * len(methods)]
        for a in AMOUNTS:
            lines.append(f"| {a:.0%} | {ms[str(a)]:.2f} ({ms['0.0'] / ms[str(a)]:.2f}×) | "
                         + " | ".join(cell(results[task][m][str(a)]) for m in methods) + " |")
        kept = {m: statistics.mean(results[task][m]["0.5"]) / statistics.mean(results[task][m]["0.0"]) for m in methods}
        lines += ["", "Share of dense accuracy kept at 50 %: " + ", ".join(f"{m} {v:.1%}" for m, v in kept.items()) + ".",
                  ""]
    figure = RESULTS / f"{args.name}.png"
    plot(results, latency, figure)
    lines += [f"Plot: `benchmarks/results/{figure.name}`; numbers: `benchmarks/results/{stored.name}`."]
    print("\n".join(lines))
    write_section(args.name, "\n".join(lines))


if __name__ == "__main__":
    main()
