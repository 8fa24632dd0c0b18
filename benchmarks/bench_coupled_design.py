"""How the coupled regions are set (issue 16): step rule, radius width, members and the removal
ranking, one seed each, measured by coupled removal at 30/50/70 % without retraining.

Run: OMP_NUM_THREADS=2 PYTHONPATH=src python benchmarks/bench_coupled_design.py
(writes the "coupled_design" section of BENCHMARKS.md)

Variants of `constrain(model, "coupled_group_k_support", k=0.5, ...)` + `SFW(lr=0.1, momentum=0.9)`:
- step: "optimizer" (the gradient-rescaled step η = α‖m‖/‖θ − v‖ of every other group) or a fixed
  Frank-Wolfe step η (`coupled_step`), both under the same linear decay;
- width: the coupled regions' radius, `coupled_width` × the members' joint expected init norm;
- members (how a channel's slices are weighted in its joint norm): "output" (the library: conv
  rows, γ, β, weight 1 each), "sized" (the same slices, member m weighted 1/√(entries of its slice),
  so a 3×3×C conv row counts like one γ entry) and "γβ" (regions over the BatchNorm γ, β slices
  only: weight 0 for the conv rows BN normalizes, which then get L2 balls of radius 10 × init
  norm), the last two built here from `channel_groups`.
Each model is then "removed" by masking — zeroing every parameter slice (all roles) of the
⌊amount·C⌋ channels of each space with the lowest score, which equals physical coupled removal
(tests/compress) — ranked three ways: the joint norm over all member slices (what
`remove_filters(coupled=True)` uses), over the output side only, and over γ, β only.
"""
from __future__ import annotations

import copy
import math

import torch
from tqdm import tqdm

from _report import machine_line, write_section
from bench_coupled_training import SGD, TASKS, accuracy, data, task_arguments, train_loop
import sparsefw
from sparsefw.assign_coupled import OUTPUT_SIDE
from sparsefw.compress import channel_groups
from sparsefw.constraints import CoupledGroupKSupportBall, L2Ball
from sparsefw.models.cnn import SmallCNN
from sparsefw.models.resnet import ResNet
from sparsefw.radii import expected_init_norms

AMOUNTS = (0.3, 0.5, 0.7)
RANKINGS = ("all", "output", "γβ")
# (members, step, width): the library's default is ("output", 0.02, 3.0)
VARIANTS = (("output", "optimizer", 10.0), ("output", "optimizer", 3.0), ("output", 0.02, 3.0),
            ("output", 0.03, 3.0), ("output", 0.03, 2.0), ("output", 0.03, 5.0), ("sized", 0.03, 3.0), ("γβ", 0.03, 3.0))


def members_of(group, which: str):
    params = [m for m in group.members if m.parameter]
    if which == "all":
        return params
    outs = [m for m in params if m.role in OUTPUT_SIDE]
    return outs if which == "output" else ([m for m in outs if m.role == "norm"] or outs)


def score(model, group, which: str) -> torch.Tensor:
    state = dict(model.named_parameters())
    total = torch.zeros(group.size, dtype=torch.float64)
    for m in members_of(group, which):
        picked = state[m.name].detach().double().index_select(m.dim, m.index.flatten())
        total += picked.movedim(m.dim, 0).reshape(group.size, -1).pow(2).sum(1)
    return total


@torch.no_grad()
def masked(model, groups, amount: float, which: str):
    net = copy.deepcopy(model)
    state = dict(net.named_parameters())
    for group in groups:
        drop = score(model, group, which).argsort()[:int(amount * group.size)]
        for m in group.members:
            if m.parameter and len(drop):
                state[m.name].index_fill_(m.dim, m.index[drop].flatten(), 0.0)
    return net.eval()


def weighted_groups(model, example, members: str, k: float, width: float) -> list[dict]:
    """Coupled regions over γ, β only ("γβ") or the output side weighted 1/√(slice entries)
    ("sized"), radius width · the weighted joint init norm; L2 balls elsewhere."""
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


def build_optimizer(model, example, members: str, step, width: float, k: float, lr: float):
    if members == "output":
        groups = sparsefw.constrain(model, "coupled_group_k_support", k=k, example_inputs=example,
                                    coupled_width=width, coupled_step=step)
    else:
        groups = weighted_groups(model, example, members, k, width)
        for g in groups:
            if isinstance(g["constraint"], CoupledGroupKSupportBall):
                g.update(lr=step, rescale=None)
    return sparsefw.SFW(groups, lr=lr, momentum=0.9)


#: the nets of bench_coupled_training built natively at half width: what a model robust to 50 %
#: coupled removal can at most reach densely (its 50 %-removed net has these widths)
HALF_WIDTH = {"ResNet-20": lambda: ResNet((8, 16, 32), (3, 3, 3), 3, 10),
              "small CNN": lambda: SmallCNN(1, 10, (8, 8, 16, 16))}


def main() -> None:
    parser = task_arguments(epochs=3)
    parser.add_argument("--reference-epochs", type=int, default=6,
                        help="epochs of the native half-width SGD reference (bench_coupled_training's)")
    parser.add_argument("--reference-seeds", type=int, default=3)
    args = parser.parse_args()
    lines = ["## How the coupled regions are set (issue 16)", "",
             "Command: `OMP_NUM_THREADS=2 PYTHONPATH=src python benchmarks/bench_coupled_design.py "
             f"--tasks {' '.join(repr(t) if ' ' in t else t for t in args.tasks)} --train {args.train} "
             f"--test {args.test} --epochs {args.epochs} --k {args.k} --lr {args.lr} --reference-epochs "
             f"{args.reference_epochs} --reference-seeds {args.reference_seeds}`", "",
             f"{machine_line()} {args.note}".rstrip(), "",
             f"Seed 0 only (a design scan, not a claim about defaults: bench_coupled_training has 3 seeds). "
             f"First {args.train} / {args.test} Fashion-MNIST images, {args.epochs} epochs, batch 64, linear decay, "
             f"k {args.k}, SFW lr {args.lr}, momentum 0.9. Step \"optimizer\": the gradient-rescaled step of every "
             "other group; a number: the fixed Frank-Wolfe step `coupled_step`. Width: `coupled_width`. Members: "
             "\"output\" the library's (conv rows, γ, β, weight 1), \"sized\" the same weighted 1/√(slice entries), "
             "\"γβ\" regions over BN γ, β only. Accuracy after masked coupled removal ranked by all / output-side / "
             "γβ slices; last column: per space width C, the share of the squared joint norm the weakest half of "
             "the channels holds (mean over spaces of that width).", ""]
    for task in args.tasks:
        x, y, xt, yt = data(TASKS[task][1], args.train, args.test)
        lines += [f"**{task}**", "", "| members | step | width | dense | " +
                  " | ".join(f"{a:.0%} ({r})" for a in AMOUNTS for r in RANKINGS) + " | weakest-half share by C |",
                  "|---|---|---|---|" + "---|" * (len(AMOUNTS) * len(RANKINGS) + 1)]
        for members, step, width in tqdm(VARIANTS, desc=task):
            torch.manual_seed(0)
            model = TASKS[task][0]()
            opt = build_optimizer(model, x[:2], members, step, width, args.k, args.lr)
            train_loop(model, opt, x, y, args.epochs, seed=0)
            groups = channel_groups(model, xt[:2])
            cells = [accuracy(masked(model, groups, a, r), xt, yt) for a in AMOUNTS for r in RANKINGS]
            lines.append(f"| {members} | {step} | {width:g} | {accuracy(model, xt, yt):.3f} | "
                         + " | ".join(f"{c:.3f}" for c in cells) + f" | {weakest_half_share(model, groups)} |")
        half = []
        for seed in range(args.reference_seeds):
            torch.manual_seed(seed)
            model = HALF_WIDTH[task]()
            train_loop(model, torch.optim.SGD(model.parameters(), **SGD), x, y, args.reference_epochs, seed)
            half.append(accuracy(model, xt, yt))
        lines += ["", f"Reference: {task} built natively at half width, SGD (lr 0.1, momentum 0.9, weight decay "
                  f"5e-4), {args.reference_epochs} epochs, seeds 0–{args.reference_seeds - 1}: test accuracy "
                  f"{sum(half) / len(half):.3f} ({min(half):.3f}–{max(half):.3f}).", ""]
    print("\n".join(lines))
    write_section("coupled_design", "\n".join(lines))


if __name__ == "__main__":
    main()
