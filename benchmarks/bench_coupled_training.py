"""Training for coupled channel removal (issue 16), each model then losing ⌊amount·C⌋ channels of every
coupled channel space without retraining.

    OMP_NUM_THREADS=2 PYTHONPATH=src python benchmarks/bench_coupled_training.py training
        coupled-group k-support SFW vs per-layer group-k-support SFW vs SGD vs SGD + a group-lasso
        penalty on the coupled groups, several seeds (section "coupled_training", results/NAME.{json,png};
        `--name` for another budget's section and files; --report rebuilds them from the stored JSON)
    OMP_NUM_THREADS=2 PYTHONPATH=src python benchmarks/bench_coupled_training.py design
        how the coupled regions are set — step rule, radius width, members, removal ranking — one seed
        each (section "coupled_design")
    ... --quick     (a few hundred images, one epoch, prints only)

Tasks: ResNet-20 on Fashion-MNIST 32×32×3 and the small CNN (16-16-32-32) on 28×28 Fashion-MNIST, a
subset of the training set, linear learning-rate decay to 0, batch 64. Latency: eval forward at batch
64, medians of interleaved rounds; the removed nets of one amount have the same widths whatever the
training, so latency is measured once per amount and task.
"""
from __future__ import annotations

import copy
import json
import math
import statistics
from pathlib import Path

import torch

import _harness as H
import sparsefw
from sparsefw.assign_coupled import OUTPUT_SIDE
from sparsefw.compress import channel_groups, measure_latency, remove_filters
from sparsefw.constraints import CoupledGroupKSupportBall, L2Ball
from sparsefw.data.fashion import load_fashion_mnist
from sparsefw.experiments.io import write_json
from sparsefw.models.cnn import SmallCNN
from sparsefw.models.resnet import ResNet, cifar_resnet
from sparsefw.optim import coupled_group_lasso_penalty
from sparsefw.radii import expected_init_norms

AMOUNTS = (0.0, 0.3, 0.5, 0.7)
COUPLED = "coupled SFW k="
BASELINES = ("per-layer SFW", "SGD")
LASSO = "SGD + coupled group lasso λ="
REUSED_ARGS = ("train", "test", "epochs", "seeds", "k", "lr")   # a stored run with these equal is reused
TASKS = {"ResNet-20": (lambda: cifar_resnet(20, 3, 10), True),
         "small CNN": (lambda: SmallCNN(1, 10, (16, 16, 32, 32)), False)}
#: the nets built natively at half width: what a model robust to 50 % coupled removal can at most reach densely
HALF_WIDTH = {"ResNet-20": lambda: ResNet((8, 16, 32), (3, 3, 3), 3, 10),
              "small CNN": lambda: SmallCNN(1, 10, (8, 8, 16, 16))}
SGD = {"lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4}


def data(padded: bool, n_train: int, n_test: int):
    train_set, test_set, _ = load_fashion_mnist(padded=padded)
    x, y = train_set.images[:n_train], train_set.targets[:n_train]
    xt, yt = test_set.images[:n_test], test_set.targets[:n_test]
    if padded:                                  # the stored images are 1 channel; the dataset repeats it
        x, xt = x.expand(-1, 3, -1, -1).contiguous(), xt.expand(-1, 3, -1, -1).contiguous()
    return x, y, xt, yt


def fit(model, opt, x, y, epochs: int, seed: int, penalty=None):
    """Batches of 64 in an order seeded by `seed`, linear decay to 0; the model in eval mode."""
    H.fit(model, opt, x, y, epochs, 64, torch.Generator().manual_seed(seed), penalty=penalty)
    return model


def accuracy(model, x, y) -> float:
    return H.accuracy(model, x, y, 10, 250)


# --- variant "training" -------------------------------------------------------------------------------
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


def training(args) -> dict[str, str]:
    stored = args.results / f"{args.name}.json"
    if args.report:                              # the stored run's own arguments and numbers
        old = json.loads(stored.read_text())
        vars(args).update({k: v for k, v in old["args"].items() if k not in ("report", "quick", "out", "threads")})
    methods = [*(f"{COUPLED}{k:g}" for k in args.coupled_ks), *args.baselines, *(f"{LASSO}{lam:g}" for lam in args.lams)]
    results = {t: {m: {str(a): [] for a in AMOUNTS} for m in methods} for t in args.tasks}
    latency = {}
    if stored.exists() and not args.fresh:       # complete (task, method) rows of an equal run are kept
        old = json.loads(stored.read_text())
        if all(old["args"].get(key) == getattr(args, key) for key in REUSED_ARGS):
            latency = old["latency_ms"] if args.report else {}
            for task, by_method in old["accuracy"].items():
                for method, by_amount in by_method.items():
                    if task in results and method in results[task] and len(by_amount["0.0"]) == args.seeds:
                        results[task][method] = by_amount
    saved = {k: v for k, v in vars(args).items() if k in (*REUSED_ARGS, "tasks", "baselines", "lams", "coupled_ks",
                                                          "name", "note", "fresh")}
    for task in [] if args.report else args.tasks:
        x, y, xt, yt = data(TASKS[task][1], args.train, args.test)
        todo = [m for m in methods if len(results[task][m]["0.0"]) < args.seeds]
        for seed, method in [(s, m) for s in range(args.seeds) for m in todo]:
            if seed == 0:
                results[task][method] = {str(a): [] for a in AMOUNTS}
            torch.manual_seed(seed)
            model = TASKS[task][0]()
            opt, penalty = make_optimizer(method, model, x[:2], args)
            fit(model, opt, x, y, args.epochs, seed, penalty)
            for amount in AMOUNTS:
                net = model if amount == 0 else remove_filters(model, amount, xt[:2], criterion="l2", coupled=True)
                results[task][method][str(amount)].append(accuracy(net, xt, yt))
            write_json(stored, {"args": saved, "accuracy": results, "latency_ms": latency})
        torch.manual_seed(0)
        model = TASKS[task][0]().eval()             # the removed nets' widths do not depend on training
        nets = [model] + [remove_filters(model, a, xt[:2], criterion="l2", coupled=True) for a in AMOUNTS[1:]]
        latency[task] = {str(a): ms for a, ms in zip(AMOUNTS, measure_latency(nets, xt[:64], repeats=2 if args.quick else 40))}
        write_json(stored, {"args": saved, "accuracy": results, "latency_ms": latency})
    quote = lambda names: " ".join(repr(n) if " " in n else n for n in names)  # noqa: E731
    command = (f"OMP_NUM_THREADS=2 PYTHONPATH=src python benchmarks/bench_coupled_training.py training --tasks "
               f"{quote(args.tasks)} --train {args.train} --test {args.test} --epochs {args.epochs} --seeds {args.seeds} "
               f"--k {args.k} --lr {args.lr} --coupled-ks {' '.join(f'{k:g}' for k in args.coupled_ks)} "
               f"--baselines {quote(args.baselines)} --lams {' '.join(f'{lam:g}' for lam in args.lams)}"
               + ("" if args.name == "coupled_training" else f" --name {args.name}"))
    lines = [f"## Training for coupled channel removal (issue 16), {args.epochs} epochs", "", f"Command: `{command}`", "",
             f"{H.machine_line()} {args.note}".rstrip(), "",
             f"First {args.train} training / {args.test} test images of Fashion-MNIST (32×32×3 for ResNet-20, 28×28 "
             f"for the small CNN), {args.epochs} epochs, batch 64, linear decay of the learning rate to 0, seeds "
             f"0–{args.seeds - 1}. Coupled SFW: `constrain(model, \"coupled_group_k_support\", k=k, example_inputs=x)` "
             f"at its defaults (coupled_width 3, coupled_step 0.02), `SFW(lr={args.lr}, momentum=0.9)`; per-layer SFW: "
             f"`constrain(model, \"group_k_support\", k={args.k})`, same SFW; SGD: lr 0.1, momentum 0.9, weight decay "
             "5e-4; SGD + coupled group lasso: the same SGD plus λ·Σ_c ‖channel c's output-side slices‖ "
             "(`optim.coupled_group_lasso_penalty`, λ as named) over the coupled regions (the regions of coupled SFW: "
             "one source of truth). Every model then loses ⌊amount·C⌋ channels of every coupled channel space "
             "(`remove_filters(coupled=True, criterion=\"l2\")`, residual streams included), no retraining, no BN "
             "recalibration. Test accuracy: mean (min–max) over seeds; latency: eval forward at batch 64, median ms "
             "(speed-up over dense).", ""]
    for task in args.tasks:
        ms, acc = latency[task], results[task]
        lines += [f"**{task}**", "", *H.table(
            ["removed", "latency ms (speed-up)", *methods],
            [[f"{a:.0%}", f"{ms[str(a)]:.2f} ({ms['0.0'] / ms[str(a)]:.2f}×)", *(H.mean_range(acc[m][str(a)]) for m in methods)]
             for a in AMOUNTS]), "", "Share of dense accuracy kept at 50 %: " + ", ".join(
            f"{m} {statistics.mean(acc[m]['0.5']) / statistics.mean(acc[m]['0.0']):.1%}" for m in methods) + ".", ""]
    plot(results, latency, args.results / f"{args.name}.png")
    lines += [f"Plot: `benchmarks/results/{args.name}.png`; numbers: `benchmarks/results/{stored.name}`."]
    return {args.name: "\n".join(lines)}


# --- variant "design" ---------------------------------------------------------------------------------
RANKINGS = ("all", "output", "γβ")
# (members, step, width): the library's default is ("output", 0.02, 3.0)
VARIANTS_SCANNED = (("output", "optimizer", 10.0), ("output", "optimizer", 3.0), ("output", 0.02, 3.0),
                    ("output", 0.03, 3.0), ("output", 0.03, 2.0), ("output", 0.03, 5.0), ("sized", 0.03, 3.0),
                    ("γβ", 0.03, 3.0))


def members_of(group, which: str):
    params = [m for m in group.members if m.parameter]
    if which == "all":
        return params
    outs = [m for m in params if m.role in OUTPUT_SIDE]
    return outs if which == "output" else ([m for m in outs if m.role == "norm"] or outs)


def score(model, group, which: str) -> torch.Tensor:
    """Squared joint norm of each channel of `group` over the member slices `which` ranks by."""
    state = dict(model.named_parameters())
    total = torch.zeros(group.size, dtype=torch.float64)
    for m in members_of(group, which):
        picked = state[m.name].detach().double().index_select(m.dim, m.index.flatten())
        total += picked.movedim(m.dim, 0).reshape(group.size, -1).pow(2).sum(1)
    return total


@torch.no_grad()
def masked(model, groups, amount: float, which: str):
    """Every parameter slice of the ⌊amount·C⌋ lowest-scored channels of each space zeroed: equal to
    physical coupled removal (tests/compress) when ranked by "all"."""
    net = copy.deepcopy(model)
    state = dict(net.named_parameters())
    for group in groups:
        drop = score(model, group, which).argsort()[:int(amount * group.size)]
        for m in group.members:
            if m.parameter and len(drop):
                state[m.name].index_fill_(m.dim, m.index[drop].flatten(), 0.0)
    return net.eval()


def weighted_groups(model, example, members: str, k: float, width: float) -> list[dict]:
    """Coupled regions over γ, β only ("γβ") or the output side weighted 1/√(slice entries) ("sized"),
    radius width · the weighted joint init norm; L2 balls (10 × init norm) elsewhere."""
    norms, named = expected_init_norms(model), dict(model.named_parameters())
    groups, claimed = [], set()
    for group in channel_groups(model, example):
        chosen = [m for m in members_of(group, "γβ" if members == "γβ" else "output") if m.name not in claimed]
        if not chosen:
            continue
        names = [m.name for m in chosen]
        weights = [1.0 if members == "γβ" else (named[m.name].numel() / group.size) ** -0.5 for m in chosen]
        radius = width * math.sqrt(sum((w * norms[n]) ** 2 for w, n in zip(weights, names)))
        region = CoupledGroupKSupportBall([named[n].shape for n in names], [m.dim for m in chosen],
                                          [m.index.tolist() for m in chosen], k=k, radius=radius, weights=weights)
        params = [named[n] for n in names]
        with torch.no_grad():
            for p, new in zip(params, region.unpack(region.shift_inside(region.pack([p.detach() for p in params])))):
                p.copy_(new)
        groups.append({"params": params, "constraint": region})
        claimed.update(names)
    for name, p in named.items():
        if name not in claimed:
            region = L2Ball(p.shape, radius=10.0 * norms[name] if p.dim() > 1 else 10.0)
            with torch.no_grad():
                p.copy_(region.shift_inside(p.detach()))
            groups.append({"params": [p], "constraint": region})
    return groups


def weakest_half_share(model, groups) -> str:
    """Per space width C: the mean over spaces of the share of the squared joint norm (all members)
    held by the ⌊C/2⌋ weakest channels — 0 once a space has concentrated onto half its channels."""
    shares: dict[int, list[float]] = {}
    for group in groups:
        squares = score(model, group, "all").sort().values
        shares.setdefault(group.size, []).append(float(squares[:group.size // 2].sum() / squares.sum()))
    return ", ".join(f"{c}: {sum(v) / len(v):.2f}" for c, v in sorted(shares.items()))


def design_optimizer(model, example, members: str, step, width: float, k: float, lr: float):
    if members == "output":
        groups = sparsefw.constrain(model, "coupled_group_k_support", k=k, example_inputs=example,
                                    coupled_width=width, coupled_step=step)
    else:
        groups = weighted_groups(model, example, members, k, width)
        for g in groups:
            if isinstance(g["constraint"], CoupledGroupKSupportBall):
                g.update(lr=step, rescale=None)
    return sparsefw.SFW(groups, lr=lr, momentum=0.9)


def design(args) -> dict[str, str]:
    amounts = AMOUNTS[1:]
    lines = ["## How the coupled regions are set (issue 16)", "",
             f"Command: `OMP_NUM_THREADS=2 PYTHONPATH=src {args.command}`", "", f"{H.machine_line()} {args.note}".rstrip(),
             "", f"Seed 0 only (a design scan, not a claim about defaults: the training variant has 3 seeds). "
             f"First {args.train} / {args.test} Fashion-MNIST images, {args.epochs} epochs, batch 64, linear decay, "
             f"k {args.k}, SFW lr {args.lr}, momentum 0.9. Step \"optimizer\": the gradient-rescaled step of every "
             "other group; a number: the fixed Frank-Wolfe step `coupled_step`. Width: `coupled_width`. Members: "
             "\"output\" the library's (conv rows, γ, β, weight 1), \"sized\" the same weighted 1/√(slice entries), "
             "\"γβ\" regions over BN γ, β only. Accuracy after masked coupled removal ranked by all / output-side / "
             "γβ slices; last column: per space width C, the share of the squared joint norm the weakest half of "
             "the channels holds (mean over spaces of that width).", ""]
    for task in args.tasks:
        x, y, xt, yt = data(TASKS[task][1], args.train, args.test)
        rows = []
        for members, step, width in VARIANTS_SCANNED[:2] if args.quick else VARIANTS_SCANNED:
            torch.manual_seed(0)
            model = TASKS[task][0]()
            fit(model, design_optimizer(model, x[:2], members, step, width, args.k, args.lr), x, y, args.epochs, seed=0)
            groups = channel_groups(model, xt[:2])
            rows.append([members, step, f"{width:g}", f"{accuracy(model, xt, yt):.3f}",
                         *(f"{accuracy(masked(model, groups, a, r), xt, yt):.3f}" for a in amounts for r in RANKINGS),
                         weakest_half_share(model, groups)])
        half = []
        for seed in range(args.reference_seeds):
            torch.manual_seed(seed)
            model = HALF_WIDTH[task]()
            half.append(accuracy(fit(model, torch.optim.SGD(model.parameters(), **SGD), x, y, args.reference_epochs,
                                     seed), xt, yt))
        lines += [f"**{task}**", "", *H.table(["members", "step", "width", "dense",
                                               *(f"{a:.0%} ({r})" for a in amounts for r in RANKINGS),
                                               "weakest-half share by C"], rows), "",
                  f"Reference: {task} built natively at half width, SGD (lr 0.1, momentum 0.9, weight decay 5e-4), "
                  f"{args.reference_epochs} epochs, seeds 0–{args.reference_seeds - 1}: test accuracy "
                  f"{sum(half) / len(half):.3f} ({min(half):.3f}–{max(half):.3f}).", ""]
    return {"coupled_design": "\n".join(lines)}


def task_arguments(epochs: int):
    """The options both variants take: tasks, data sizes, epochs, k and SFW's lr (--quick: tiny sizes)."""
    def add(parser) -> None:
        parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
        parser.add_argument("--train", type=int, default=8000)
        parser.add_argument("--test", type=int, default=2000)
        parser.add_argument("--epochs", type=int, default=epochs)
        parser.add_argument("--k", type=float, default=0.5)
        parser.add_argument("--lr", type=float, default=0.1)
        parser.add_argument("--note", default="", help="what else ran on the machine (goes into the section)")
    return add


def training_arguments(parser) -> None:
    task_arguments(6)(parser)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--baselines", nargs="*", default=list(BASELINES), choices=list(BASELINES))
    parser.add_argument("--lams", type=float, nargs="*", default=[5e-3, 2e-2],
                        help="group-lasso strengths of the SGD + coupled group lasso baseline, one run each")
    parser.add_argument("--coupled-ks", type=float, nargs="+", default=[0.5, 0.3],
                        help="k of coupled SFW, one run each (--k is the per-layer SFW's)")
    parser.add_argument("--fresh", action="store_true", help="ignore the stored results of an equal earlier run")
    parser.add_argument("--name", default="coupled_training",
                        help="the BENCHMARKS.md section and results/NAME.{json,png} (another name for another budget)")


def design_arguments(parser) -> None:
    task_arguments(3)(parser)
    parser.add_argument("--reference-epochs", type=int, default=6, help="epochs of the native half-width SGD reference")
    parser.add_argument("--reference-seeds", type=int, default=3)


def quick(variant):
    """--quick: 256 training and 128 test images, one epoch, one seed."""
    def run(args):
        if args.quick:
            vars(args).update(train=256, test=128, epochs=1, seeds=1, reference_epochs=1, reference_seeds=1)
        return variant(args)
    return run


VARIANTS = {
    "training": H.Variant(quick(training), "coupled SFW against the baselines, several seeds (section coupled_training)",
                          training_arguments, threads=2, report=True),
    "design": H.Variant(quick(design), "step rule, width, members and ranking of the coupled regions (coupled_design)",
                        design_arguments, threads=2),
}

if __name__ == "__main__":
    H.main("bench_coupled_training.py", __doc__, VARIANTS)
