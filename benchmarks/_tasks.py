"""Small offline tasks, one training recipe and one compression sweep, shared by the variants of
bench_robustness.py (choosing the defaults, checking them on tasks nobody tuned for, segmentation).

Training: `sparsefw.constrain(model, mode, example_inputs=x, **constraint)` + `sparsefw.SFW(groups)` at the library's
defaults unless a run overrides them, or SGD (lr 0.1, momentum 0.9, weight decay 5e-4), or Adam
(lr 1e-2); linear decay of the learning rate to 0, batches drawn with a seeded generator, the task's
loss (cross-entropy unless it sets another, e.g. `ce_dice`). Compression: the library's own one-shot
calls — `compress.prune` (global magnitude), `compress.remove_filters` (L1, every conv; or coupled
channel spaces), `compress.factorize(layers="conv")` (per-conv truncated SVD, as in the paper's code).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

import sparsefw
from sparsefw import compress
from sparsefw.experiments.evaluation import evaluate, primary_metric

import _harness as H

SGD = {"lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4}
ADAM = {"lr": 1e-2}           # torch's default 1e-3 stalls on the narrow M2NIST nets (bench_segmentation)
# (kind, level, column name): the compression levels
LEVELS = (("unstructured", 0.9, "90% unstr."), ("unstructured", 0.95, "95% unstr."),
          ("filters", 0.3, "30% filters"), ("filters", 0.5, "50% filters"),
          ("lowrank", 0.5, "50% rank kept"), ("lowrank", 0.25, "25% rank kept"))


@dataclass
class Task:
    """A dataset held in memory, a model builder and the training budget."""
    name: str
    build: Callable[[], nn.Module]
    train: tuple[torch.Tensor, torch.Tensor]
    test: tuple[torch.Tensor, torch.Tensor]
    num_classes: int
    kind: str = "classification"          # or "segmentation"
    epochs: int = 4
    batch_size: int = 64
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = F.cross_entropy

    @property
    def metric(self) -> str:
        return primary_metric(self.kind)


def build_seeded(task: Task, seed: int) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return task.build()


def make_optimizer(model: nn.Module, method: str, example: torch.Tensor, constraint: dict | None = None,
                   sfw: dict | None = None):
    """"sgd_wd" → torch SGD, "adam" → torch Adam; a mode name → SFW on `sparsefw.constrain(model, mode,
    example_inputs=example, **constraint)`."""
    if method == "sgd_wd":
        return torch.optim.SGD(model.parameters(), **SGD)
    if method == "adam":
        return torch.optim.Adam(model.parameters(), **ADAM)
    groups = sparsefw.constrain(model, method, **{"example_inputs": example, **(constraint or {})})
    return sparsefw.SFW(groups, **(sfw or {}))


def train(task: Task, method: str, seed: int, constraint: dict | None = None, sfw: dict | None = None,
          optimizer_factory: Callable | None = None) -> tuple[nn.Module, float]:
    """(trained model in eval mode, seconds)."""
    model = build_seeded(task, seed)
    x, y = task.train
    opt = (optimizer_factory or make_optimizer)(model, method, x[:2], constraint, sfw)
    t0 = time.perf_counter()
    H.fit(model, opt, x, y, task.epochs, task.batch_size, torch.Generator().manual_seed(1000 + seed), task.loss)
    return model, time.perf_counter() - t0


def ce_dice(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy plus the soft Dice loss 1 − mean over classes of (2·Σ p·t + 1) / (Σ p + Σ t + 1),
    sums over the batch's pixels (p: softmax, t: one-hot target) — every class weighs alike."""
    p = logits.softmax(1)
    t = F.one_hot(target.long(), p.shape[1]).movedim(-1, 1).to(p.dtype)
    dims = (0, *range(2, p.ndim))
    dice = (2 * (p * t).sum(dims) + 1) / (p.sum(dims) + t.sum(dims) + 1)
    return F.cross_entropy(logits, target.long()) + 1 - dice.mean()


def score(task: Task, model: nn.Module) -> float:
    return evaluate(model, H.batches(*task.test), task.kind, task.num_classes)[task.metric]


def compressed(model: nn.Module, kind: str, level: float, example: torch.Tensor) -> nn.Module:
    if kind == "unstructured":
        return compress.prune(model, sparsity=level)
    if kind in ("filters", "coupled"):
        return compress.remove_filters(model, amount=level, example_inputs=example, coupled=kind == "coupled")
    return compress.factorize(model, rank=level, layers="conv")


def columns(levels=LEVELS) -> list[str]:
    return [col for _, _, col in levels]


def sweep(task: Task, model: nn.Module, levels=LEVELS) -> dict[str, float | None]:
    """{"dense": metric, column: metric after compression (None where the model has no conv)}."""
    has_conv = any(isinstance(m, nn.Conv2d) for m in model.modules())
    return {"dense": score(task, model), **{
        col: score(task, compressed(model, kind, level, task.test[0][:2]).eval()) if has_conv or kind == "unstructured"
        else None for kind, level, col in levels}}


# --- summaries of the logged runs ----------------------------------------------------------------
def kept(record: dict, col: str) -> float | None:
    """Kept share of the dense metric at column `col` (None where not applicable)."""
    v = record["scores"][col]
    return None if v is None else v / record["scores"]["dense"]


def summary(records: list[dict], methods: tuple, levels: tuple = LEVELS) -> dict:
    """{(task, method): {"dense": (mean, spread), "seeds": n, column: kept (mean, spread) or None}}, in
    the order tasks first appear and `methods` lists them."""
    out = {}
    for task in dict.fromkeys(r["task"] for r in records):
        for method in methods:
            rs = [r for r in records if r["task"] == task and r["method"] == method]
            if rs:
                out[task, method] = {"dense": mean_spread([r["scores"]["dense"] for r in rs]), "seeds": len(rs),
                                     **{c: mean_spread([kept(r, c) for r in rs]) for _, _, c in levels}}
    return out


def kept_bars(ax, s: dict, task: str, methods: tuple, cols: list[str], dense: str = "dense") -> None:
    """Draw on `ax` the kept share of every method of `s` (a `summary`) at each column for `task`: one
    bar per method and column, error bar = spread, the method's dense metric in its label."""
    width = 0.8 / len(methods)
    for j, method in enumerate(methods):
        cell = s.get((task, method))
        if cell is None:
            continue
        vals = [cell[c] or (0.0, 0.0) for c in cols]
        ax.bar([i + (j - (len(methods) - 1) / 2) * width for i in range(len(cols))], [v[0] for v in vals], width,
               yerr=[v[1] for v in vals], label=f"{method} ({dense} {cell['dense'][0]:.2f})", capsize=2)
    ax.set_xticks(range(len(cols)), cols, rotation=30, fontsize=8)
    ax.grid(alpha=0.3, axis="y")


def kept_figure(s: dict, methods: tuple, cols: list[str], path, rows: int = 1, dense: str = "dense",
                goals: dict[str, float] | None = None, title: Callable[[str], str] = str):
    """One panel per task of `s` (a `summary`) in `rows` rows: `kept_bars`, a dashed line at the task's
    kept-share goal (`goals`); saved as `path`."""
    names = list(dict.fromkeys(t for t, _ in s))
    per_row = -(-len(names) // rows)
    fig, axes = H.pyplot().subplots(rows, per_row, figsize=(6 * per_row, 4.4 * rows), squeeze=False)
    for ax, task in zip(axes.flat, names):
        kept_bars(ax, s, task, methods, cols, dense)
        ax.set(ylim=(0, 1.3), ylabel=f"kept share of {dense}")
        if task in (goals or {}):
            ax.axhline(goals[task], color="grey", lw=0.8, ls="--")
        ax.set_title(title(task), fontsize=9)
        ax.legend(fontsize=6.5, loc="upper right", framealpha=0.5, ncol=2)
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    fig.tight_layout()
    return H.save_plot(fig, path)


def mean_spread(values: list[float | None]) -> tuple[float, float] | None:
    """(mean, half the range) over seeds; None if any value is missing."""
    if not values or any(v is None for v in values):
        return None
    return sum(values) / len(values), (max(values) - min(values)) / 2


def cell(ms: tuple[float, float] | None) -> str:
    return "—" if ms is None else f"{ms[0]:.2f} ± {ms[1]:.2f}"


def summary_table(s: dict, levels=LEVELS, first: str = "task", dense: str = "dense") -> list[str]:
    """The markdown rows of a `summary`: dense metric and kept share at each level."""
    return H.table([first, "method", "seeds", dense, *columns(levels)],
                   [[task, method, c["seeds"], f"{c['dense'][0]:.3f} ± {c['dense'][1]:.3f}",
                     *(cell(c[col]) for col in columns(levels))] for (task, method), c in s.items()])
