"""Training for coupled channel removal (issue 16), each model then losing ⌊amount·C⌋ channels of every
coupled channel space without retraining.

    OMP_NUM_THREADS=2 PYTHONPATH=src python benchmarks/bench_coupled_training.py training
        coupled-group k-support SFW vs per-layer group-k-support SFW vs SGD vs SGD + a group-lasso
        penalty on the coupled groups, several seeds (section "coupled_training", results/NAME.{json,png};
        `--name` for another budget's section and files; --report rebuilds them from the stored JSON)
    ... --quick     (a few hundred images, one epoch, prints only)

Tasks: ResNet-20 on Fashion-MNIST 32×32×3 and the small CNN (16-16-32-32) on 28×28 Fashion-MNIST; the
section states the protocol (sections/coupled_training.md). The removed nets of one amount have the same
widths whatever the training, so latency is measured once per amount and task.
"""
from __future__ import annotations

import json
import statistics
from pathlib import Path

import torch

import _harness as H
import sparsefw
from sparsefw.compress import measure_latency, remove_filters
from sparsefw.data.fashion import load_fashion_mnist
from sparsefw.experiments.io import write_json
from sparsefw.models.cnn import SmallCNN
from sparsefw.models.resnet import cifar_resnet
from sparsefw.optim import coupled_group_lasso_penalty

AMOUNTS = (0.0, 0.3, 0.5, 0.7)
COUPLED = "coupled SFW k="
BASELINES = ("per-layer SFW", "SGD")
LASSO = "SGD + coupled group lasso λ="
REUSED_ARGS = ("train", "test", "epochs", "seeds", "k", "lr")   # a stored run with these equal is reused
TASKS = {"ResNet-20": (lambda: cifar_resnet(20, 3, 10), True),
         "small CNN": (lambda: SmallCNN(1, 10, (16, 16, 32, 32)), False)}
SGD = {"lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4}


def data(padded: bool, n_train: int, n_test: int):
    train_set, test_set, _ = load_fashion_mnist(padded=padded)
    (x, y), (xt, yt) = train_set[:n_train], test_set[:n_test]
    return x.contiguous(), y, xt.contiguous(), yt       # padded: 3 channels, views of 1 until made contiguous


def make_optimizer(method: str, model, example, args):
    """(optimizer, penalty or None) of a method name of the section."""
    if method.startswith(COUPLED):
        groups = sparsefw.constrain(model, "coupled_group_k_support", k=float(method[len(COUPLED):]),
                                    example_inputs=example)
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


def plot(results: dict, latency: dict, path: Path) -> None:
    fig, axes = H.pyplot().subplots(1, len(results), figsize=(5.5 * len(results), 4.8), squeeze=False)
    axes = axes[0]
    for ax, (task, by_method) in zip(axes, results.items()):
        ms = [latency[task][str(a)] for a in AMOUNTS]
        for method, by_amount in by_method.items():
            means = [statistics.mean(by_amount[str(a)]) for a in AMOUNTS]
            ax.errorbar(ms, means, yerr=[[m - min(by_amount[str(a)]) for m, a in zip(means, AMOUNTS)],
                                         [max(by_amount[str(a)]) - m for m, a in zip(means, AMOUNTS)]],
                        fmt="o-", capsize=3, label=method)
        for a, m in zip(AMOUNTS, ms):
            ax.annotate(f"{a:.0%}", (m, 0.05), ha="center", fontsize=8, color="gray")
        ax.set(title=f"{task}: coupled removal, no retraining", xlabel="latency, batch 64, eval (ms)",
               ylabel="test accuracy (mean, min–max over seeds)", ylim=(0, 1))
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=3, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.12, 1, 1))
    H.save_plot(fig, path)


def stored_results(args, stored: Path, methods: list[str]) -> tuple[dict, dict]:
    """(accuracy per task, method and amount; latency per task): the complete (task, method) rows of the
    stored run when it had the same REUSED_ARGS (and its latency with --report), the rest empty."""
    results = {t: {m: {str(a): [] for a in AMOUNTS} for m in methods} for t in args.tasks}
    if not stored.exists() or args.fresh:
        return results, {}
    old = json.loads(stored.read_text())
    if not all(old["args"].get(key) == getattr(args, key) for key in REUSED_ARGS):
        return results, {}
    for task, by_method in old["accuracy"].items():
        for method, by_amount in by_method.items():
            if task in results and method in results[task] and len(by_amount["0.0"]) == args.seeds:
                results[task][method] = by_amount
    return results, old["latency_ms"] if args.report else {}


def train_task(args, task: str, methods: list[str], results: dict, latency: dict, save) -> None:
    """Train the missing (method, seed) runs of `task`, accuracy after coupled removal at every amount,
    then the removed nets' latency; `save()` after each run."""
    x, y, xt, yt = data(TASKS[task][1], args.train, args.test)
    todo = [m for m in methods if len(results[task][m]["0.0"]) < args.seeds]
    for seed, method in [(s, m) for s in range(args.seeds) for m in todo]:
        if seed == 0:
            results[task][method] = {str(a): [] for a in AMOUNTS}
        torch.manual_seed(seed)
        model = TASKS[task][0]()
        opt, penalty = make_optimizer(method, model, x[:2], args)
        H.fit(model, opt, x, y, args.epochs, 64, torch.Generator().manual_seed(seed), penalty=penalty)
        for amount in AMOUNTS:
            net = model if amount == 0 else remove_filters(model, amount, xt[:2], criterion="l2", coupled=True)
            results[task][method][str(amount)].append(H.accuracy(net, xt, yt, 10, 250))
        save()
    torch.manual_seed(0)
    model = TASKS[task][0]().eval()             # the removed nets' widths do not depend on training
    nets = [model] + [remove_filters(model, a, xt[:2], criterion="l2", coupled=True) for a in AMOUNTS[1:]]
    latency[task] = {str(a): ms for a, ms in zip(AMOUNTS, measure_latency(nets, xt[:64], repeats=2 if args.quick else 40))}
    save()


def training_section(args, methods: list[str], results: dict, latency: dict, stored: Path) -> str:
    tables = []
    for task in args.tasks:
        ms, acc = latency[task], results[task]
        tables += [f"**{task}**", "", *H.table(
            ["removed", "latency ms (speed-up)", *methods],
            [[f"{a:.0%}", f"{ms[str(a)]:.2f} ({ms['0.0'] / ms[str(a)]:.2f}×)", *(H.mean_range(acc[m][str(a)]) for m in methods)]
             for a in AMOUNTS]), "", "Share of dense accuracy kept at 50 %: " + ", ".join(
            f"{m} {statistics.mean(acc[m]['0.5']) / statistics.mean(acc[m]['0.0']):.1%}" for m in methods) + ".", ""]
    return H.section("coupled_training", command=args.command, a=args, last_seed=args.seeds - 1,
                     note=f"{H.machine_line()} {args.note}".rstrip(), tables=tables, stored=stored.name)


def training(args) -> dict[str, str]:
    stored = args.results / f"{args.name}.json"
    if args.quick:                               # 256 training and 128 test images, one epoch, one seed
        vars(args).update(train=256, test=128, epochs=1, seeds=1)
    if args.report:                              # the stored run's own arguments, command and numbers
        old = json.loads(stored.read_text())
        vars(args).update({k: v for k, v in old["args"].items() if k not in ("report", "quick", "out", "threads")})
    methods = [*(f"{COUPLED}{k:g}" for k in args.coupled_ks), *args.baselines, *(f"{LASSO}{lam:g}" for lam in args.lams)]
    results, latency = stored_results(args, stored, methods)
    saved = {k: v for k, v in vars(args).items() if k in (*REUSED_ARGS, "tasks", "baselines", "lams", "coupled_ks",
                                                          "name", "note", "fresh", "command")}
    for task in [] if args.report else args.tasks:
        train_task(args, task, methods, results, latency,
                   save=lambda: write_json(stored, {"args": saved, "accuracy": results, "latency_ms": latency}))
    plot(results, latency, args.results / f"{args.name}.png")
    return {args.name: training_section(args, methods, results, latency, stored)}


def training_arguments(parser) -> None:
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    parser.add_argument("--train", type=int, default=8000)
    parser.add_argument("--test", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--k", type=float, default=0.5)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--note", default="", help="what else ran on the machine (goes into the section)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--baselines", nargs="*", default=list(BASELINES), choices=list(BASELINES))
    parser.add_argument("--lams", type=float, nargs="*", default=[5e-3, 2e-2],
                        help="group-lasso strengths of the SGD + coupled group lasso baseline, one run each")
    parser.add_argument("--coupled-ks", type=float, nargs="+", default=[0.5, 0.3],
                        help="k of coupled SFW, one run each (--k is the per-layer SFW's)")
    parser.add_argument("--fresh", action="store_true", help="ignore the stored results of an equal earlier run")
    parser.add_argument("--name", default="coupled_training",
                        help="the BENCHMARKS.md section and results/NAME.{json,png} (another name for another budget)")


VARIANTS = {"training": H.Variant(training, "coupled SFW against the baselines, several seeds (section "
                                  "coupled_training)", training_arguments, threads=2, report=True)}

if __name__ == "__main__":
    H.main("bench_coupled_training.py", __doc__, VARIANTS)
