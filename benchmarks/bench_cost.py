"""What compression-aware training costs beyond SGD with momentum (issues 9, 17), all methods side
by side in one process, interleaved, medians.

    python benchmarks/bench_cost.py step --repeats 11 --threads 1 --training   # section "sfw_step"
        one optimizer.step() per region mode (small CNN, ResNet-20, random gradients) and its LMOs;
        --training: a whole ResNet-20 step
    python benchmarks/bench_cost.py cost --threads 1            # sections "cost", "cost_scaling":
        optimizer-step overhead per layer shape (WRN-28-10, ResNet-50) and per model, the spectral LMO
        against k
    ... --quick                                                 # tiny shapes, one repeat, prints only

At one thread the CPU clock is the thread's CPU time (`time.thread_time`), which other processes do
not inflate; otherwise wall-clock time. The methods and their settings: `Method` and `METHODS` in this file.
"""
from __future__ import annotations

import _harness as H  # first, before torch: it sets OMP_WAIT_POLICY (see its docstring)

import copy
import math
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

import sparsefw
from sparsefw.constraints import SpectralKSupportBall, lmos
from sparsefw.models import BottleneckResNet, build_model
from sparsefw.models.resnet import ResNet
from sparsefw.optim.baselines import ProxStep, group_lasso_penalty, nuclear_norm_penalty, prox_nuclear_

LR, MOMENTUM, WIDTH, LAM = 0.1, 0.9, 10.0, 1e-4
GRAD_SCALE = 1e-3            # random gradients: entries N(0, GRAD_SCALE²)
Shape = tuple[int, int, int, int]


# --- the methods, each bound to its own copy of a model ---------------------------------------------
@dataclass(frozen=True)
class Method:
    """SGD (lr 0.1, momentum 0.9); SFW on `constrain(model, mode, k, width 10)`, same lr and momentum,
    rescale "gradient"; SGD + a penalty (λ = 1e-4); prox-SGD (SGD step, then singular-value soft-thresholding)."""
    name: str
    kind: str                     # "sgd" | "sfw" | "penalty" | "prox"
    mode: str | None = None       # sparsefw.constrain mode (kind "sfw")
    k: float | None = None
    penalty: Callable[[nn.Module, float], torch.Tensor] | None = None
    spectral_refresh: int | None = None   # SFW: warm-started spectral LMO, exact every this many steps


METHODS: dict[str, Method] = {m.name: m for m in [
    Method("SGD", "sgd"),
    Method("SFW spectral k=10%", "sfw", "spectral_k_support", 0.1),
    Method("SFW spectral k=30%", "sfw", "spectral_k_support", 0.3),
    Method("SFW spectral k=30% warm", "sfw", "spectral_k_support", 0.3, spectral_refresh=50),
    Method("SFW nuclear ball", "sfw", "nuclear"),
    Method("SFW k-support k=10%", "sfw", "k_support", 0.1),
    Method("SFW group-k-support k=30%", "sfw", "group_k_support", 0.3),
    Method("SFW K-sparse k=10%", "sfw", "k_sparse", 0.1),
    Method("SFW L2 ball", "sfw", "l2"),
    Method("SGD + nuclear penalty", "penalty", penalty=nuclear_norm_penalty),
    Method("SGD + group-lasso penalty", "penalty", penalty=group_lasso_penalty),
    Method("prox-SGD (SVT)", "prox"),
]}
SPECTRAL, PENALTY = "SFW spectral k=30%", "SGD + nuclear penalty"
#: the methods of issue 9 (layer and model tables)
LAYER_METHODS = ["SGD", "SFW spectral k=10%", SPECTRAL, "SFW nuclear ball", "SFW k-support k=10%",
                 "SFW group-k-support k=30%", PENALTY, "prox-SGD (SVT)"]
#: section "sfw_step": row label → method, and the issue-17 goal on the ratio to SGD
STEP_ROWS = {"SGD": "SGD", "k_support": "SFW k-support k=10%", "k_sparse": "SFW K-sparse k=10%", "l2": "SFW L2 ball",
             "group_k_support": "SFW group-k-support k=30%", "spectral_k_support": SPECTRAL,
             "nuclear": "SFW nuclear ball", "spectral_k_support warm": "SFW spectral k=30% warm"}
STEP_GOALS = {"l2": 1.5, "k_support": 2.0, "group_k_support": 2.0, "spectral_k_support": 3.0}


class Trainer:
    """One method on its own deep copy of `model`."""

    def __init__(self, method: Method, model: nn.Module):
        self.method = method
        self.model = copy.deepcopy(model)
        if method.kind == "sfw":
            groups = sparsefw.constrain(self.model, method.mode, k=method.k, width=WIDTH)
            self.optimizer = sparsefw.SFW(groups, lr=LR, momentum=MOMENTUM, rescale="gradient",
                                          spectral_refresh=method.spectral_refresh)
        else:
            self.optimizer = torch.optim.SGD(self.model.parameters(), lr=LR, momentum=MOMENTUM)
        self.prox = ProxStep(self.optimizer, prox_nuclear_, LAM) if method.kind == "prox" else None

    def set_gradients(self, seed: int, scale: float) -> None:
        """p.grad ~ scale·N(0, 1), the same values for every Trainer given the same seed."""
        gen = torch.Generator().manual_seed(seed)
        for p in self.model.parameters():
            p.grad = (scale * torch.randn(p.shape, generator=gen)).to(p.device, p.dtype)

    def optimizer_step(self) -> None:
        """What the method adds after the loss's backward: penalty forward+backward, step, prox."""
        if self.method.penalty is not None:
            self.method.penalty(self.model, LAM).backward()
        self.optimizer.step()
        if self.prox is not None:
            self.prox.step()

    def regions(self) -> tuple[list, list[torch.Tensor]]:
        """(regions, their momentum buffers) of an SFW method after a first step."""
        groups = [g for g in self.optimizer.param_groups if g["constraint"] is not None]
        state = self.optimizer.state
        return [g["constraint"] for g in groups], [state[g["params"][0]]["momentum_buffer"] for g in groups]

    def own_work(self) -> Callable[[], None] | None:
        """An SFW method's own work alone, its LMOs, as a callable (None for the others, whose
        overhead is their own work)."""
        return (lambda rb=self.regions(): lmos(*rb)) if self.method.kind == "sfw" else None

    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """Forward, loss, backward, then `optimizer_step`."""
        self.optimizer.zero_grad()
        F.cross_entropy(self.model(x), y).backward()
        self.optimizer_step()


# --- shapes: conv weights (c_out, c_in, kh, kw), matrix view c_out × c_in·kh·kw --------------------
def resnet50_conv_shapes() -> list[Shape]:
    """The 53 conv weight shapes of ResNet-50 (the zoo's, torchvision's layout)."""
    with torch.device("meta"):
        return [tuple(m.weight.shape) for m in BottleneckResNet().modules() if isinstance(m, nn.Conv2d)]


class ConvBank(nn.Module):
    """Bias-free Conv2d layers of the given weight shapes, plus an optional Linear head: a stand-in for a
    model when only its parameters matter (optimizer-step costs)."""

    def __init__(self, shapes: list[Shape], head: tuple[int, int] | None = None, seed: int = 0):
        super().__init__()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.convs = nn.ModuleList(nn.Conv2d(ci, co, (kh, kw), bias=False) for co, ci, kh, kw in shapes)
            self.head = nn.Linear(head[1], head[0]) if head else None


def matrix_shape(shape: Shape) -> tuple[int, int]:
    return shape[0], shape[1] * shape[2] * shape[3]


# --- measurements -------------------------------------------------------------------------------------
def clock() -> Callable[[], float]:
    return time.thread_time if torch.get_num_threads() == 1 else time.perf_counter


def optimizer_step_costs(model: nn.Module, names: list[str], repeats: int, seed: int = 0,
                         min_sample_s: float = 0.01) -> dict[str, dict[str, float]]:
    """Per method: "step" (penalty fwd+bwd + step + prox, s), "overhead" (step − SGD's step), "own" (an
    SFW method's LMOs alone, s; nan for the others, whose overhead is their own work) and "setup"
    (constrain + optimizer construction, s)."""
    trainers, setup = {}, {}
    for name in names:
        start = time.perf_counter()
        trainers[name] = Trainer(METHODS[name], model)
        setup[name] = time.perf_counter() - start
        trainers[name].set_gradients(seed, GRAD_SCALE)
        trainers[name].optimizer_step()  # creates momentum buffers
    fns = {name: t.optimizer_step for name, t in trainers.items()}
    fns.update({f"{name} (own)": own for name, t in trainers.items() if (own := t.own_work()) is not None})
    med = H.medians(H.interleaved(fns, repeats, min_sample_s))
    base = med.get("SGD", math.nan)
    return {name: {"step": med[name], "own": med.get(f"{name} (own)", math.nan), "overhead": med[name] - base,
                   "setup": setup[name]} for name in names}


def _test_matrix(m: int, p: int, spectrum: str, gen: torch.Generator, scale: float = GRAD_SCALE) -> torch.Tensor:
    """float32 matrix: iid Gaussian N(0, scale²) ("gaussian"), or singular values scale·√p/√i with
    random singular vectors ("1/√i")."""
    if spectrum == "gaussian":
        return scale * torch.randn(m, p, generator=gen)
    r = min(m, p)
    u = torch.linalg.qr(torch.randn(m, r, generator=gen, dtype=torch.float64)).Q
    v = torch.linalg.qr(torch.randn(p, r, generator=gen, dtype=torch.float64)).Q
    return (scale * math.sqrt(p) * (u * torch.arange(1, r + 1, dtype=torch.float64).rsqrt()) @ v.mT).float()


def spectral_lmo_error(shape: Shape, k: float, spectrum: str, seed: int = 0) -> tuple[float, float, float]:
    """Errors of SpectralKSupportBall(shape, k, radius 1).lmo(M) in float32 against the exact LMO
    v* = −U_kΣ_kV_kᵀ/‖Σ_k‖₂ from a float64 SVD: (direction shortfall 1 − ⟨M, v⟩/(‖v‖_F·‖Σ_k‖₂), ≥ 0
    up to rounding; norm excess ‖v‖_F/τ − 1, > 0 puts v outside the region; vertex distance ‖v − v*‖_F/‖v*‖_F)."""
    m, p = matrix_shape(shape)
    M = _test_matrix(m, p, spectrum, torch.Generator().manual_seed(seed))
    region = SpectralKSupportBall(shape, k=k, radius=1.0)
    v = region.lmo(M.reshape(shape)).reshape(m, p).double()
    u, s, vh = torch.linalg.svd(M.double(), full_matrices=False)
    top = torch.linalg.vector_norm(s[:region.k])
    exact = -(u[:, :region.k] * s[:region.k]) @ vh[:region.k] / top
    size = torch.linalg.vector_norm(v)
    return 1 + float((M.double() * v).sum() / (size * top)), float(size) - 1, float(torch.linalg.vector_norm(v - exact))


def k_scaling(shape: Shape, fractions: list[float], repeats: int, min_sample_s: float) -> dict[str, float]:
    """Seconds per spectral LMO on a Gaussian matrix for each k (fraction of the rank), and the nuclear
    penalty's forward+backward on the same weight ("penalty")."""
    M = _test_matrix(*matrix_shape(shape), "gaussian", torch.Generator().manual_seed(1)).reshape(shape)
    fns = {f"k={r.k}": (lambda r=r: r.lmo(M)) for r in (SpectralKSupportBall(shape, k=f, radius=1.0) for f in fractions)}
    w = M.clone().requires_grad_()
    fns["penalty"] = lambda: nuclear_norm_penalty([w], 1e-4).backward()
    return H.medians(H.interleaved(fns, repeats, min_sample_s))


# --- variant "step" ---------------------------------------------------------------------------------
def step_rows(label: str, model: nn.Module, repeats: int) -> list[list]:
    """One optimizer.step() per row of STEP_ROWS, and the LMOs alone, one by one and batched."""
    trainers = {row: Trainer(METHODS[name], model) for row, name in STEP_ROWS.items()}
    fns = {}
    for row, t in trainers.items():
        t.set_gradients(0, 1e-2)
        t.optimizer.step()
        fns[row] = t.optimizer.step
        if row != "SGD":
            regions, buffers = t.regions()
            fns[f"{row} lmo"] = lambda rb=list(zip(regions, buffers)): [c.lmo(m) for c, m in rb]
            fns[f"{row} batched"] = lambda r=regions, b=buffers: lmos(r, b)
    samples = H.interleaved(fns, repeats, min_sample_s=0.005, clock=clock())
    ms = {key: 1e3 * statistics.median(s) for key, s in samples.items()}
    low = {key: 1e3 * min(s) for key, s in samples.items()}
    rows = [[label, "SGD", f"{ms['SGD']:.3f} / {low['SGD']:.3f}", "–", "–", "1.00 / 1.00", ""]]
    for row in list(STEP_ROWS)[1:]:
        goal = STEP_GOALS.get(row)
        ratio = ms[row] / ms["SGD"]
        rows.append([label, row, f"{ms[row]:.3f} / {low[row]:.3f}", f"{ms[row + ' lmo']:.3f}",
                     f"{ms[row + ' batched']:.3f}", f"{ratio:.2f} / {low[row] / low['SGD']:.2f}",
                     "" if goal is None else f"≤ {goal:.1f}: {'met' if ratio <= goal else 'missed'}"])
    return rows


def whole_step_table(model: nn.Module, x: torch.Tensor, y: torch.Tensor, repeats: int) -> str:
    """Forward + loss + backward + step of the first seven rows of STEP_ROWS, interleaved: ms and ratio
    to SGD, median / min over the repeats."""
    trainers = {row: Trainer(METHODS[name], model) for row, name in list(STEP_ROWS.items())[:7]}
    for t in trainers.values():
        t.train_step(x, y)
    samples = H.interleaved({row: (lambda t=t: t.train_step(x, y)) for row, t in trainers.items()}, repeats, 0.0,
                            clock=clock())
    med, low = H.medians(samples), {row: min(s) for row, s in samples.items()}
    return "\n".join(["", "", "### Whole training step on ResNet-20 (forward + backward + step, batch 128, 3×32×32)",
                      "", *H.table(["optimizer", "time (ms), median / min", "ratio to SGD, median / min"],
                                   [[row, f"{1e3 * med[row]:.1f} / {1e3 * low[row]:.1f}",
                                     f"{med[row] / med['SGD']:.3f} / {low[row] / low['SGD']:.3f}"]
                                    for row in trainers])])


def step(args) -> dict[str, str]:
    quick = args.quick
    models = {"cnn (65.8k params)": build_model("cnn", num_classes=10, in_channels=1, seed=0),
              "resnet20 (272k params)": build_model("resnet20", num_classes=10, in_channels=3, seed=0)}
    if quick:
        models = {"tiny resnet": ResNet((4, 8, 8), (1, 1, 1), 3, 10)}
    rows = [r for label, model in models.items() for r in step_rows(label, model, 1 if quick else args.repeats)]
    training = ""
    if args.training:
        gen = torch.Generator().manual_seed(1)
        x = torch.randn(8 if quick else 128, 3, 32, 32, generator=gen)
        training = whole_step_table(list(models.values())[-1], x, torch.randint(0, 10, (len(x),), generator=gen),
                                    1 if quick else max(5, args.repeats // 3))
    return {"sfw_step": H.section(
        "sfw_step", threads=args.threads, command=args.command, training=training,
        clock="thread CPU time (`time.thread_time`)" if clock() is time.thread_time else "wall-clock time",
        steps=H.table(["model", "optimizer", "step (ms)", "LMOs, one by one (ms)", "LMOs, batched (ms)", "ratio to SGD",
                       "goal (on the median)"], rows))}


# --- variant "cost" -----------------------------------------------------------------------------
def plan(quick: bool) -> dict:
    """Shapes, models and repeats of a full run, or tiny ones for --quick."""
    if quick:
        return dict(layers=[(8, 8, 3, 3), (16, 4, 1, 1)], goal_shapes=[(8, 8, 3, 3)],
                    models={"tiny bank": ConvBank([(8, 4, 3, 3), (8, 8, 3, 3)], head=(3, 8))},
                    k_shapes=[(8, 8, 3, 3)], k_fractions=[0.25, 1.0],
                    repeats=1, model_repeats=1, min_sample_s=0.0)
    torch.manual_seed(0)
    # 3×3 convs c → c (all 3×3 shapes of WRN-28-10's and ResNet-50's main paths), then 1×1 ones
    return dict(layers=[(c, c, 3, 3) for c in (16, 32, 64, 128, 160, 256, 320, 512, 640)] +
                [(512, 2048, 1, 1), (2048, 512, 1, 1), (2048, 1024, 1, 1)],
                goal_shapes=[(640, 640, 3, 3), (512, 512, 3, 3), (2048, 512, 1, 1)],
                models={"WRN-28-10 (36.5M params)": build_model("wrn28_10", num_classes=100, in_channels=3, seed=0),
                        "ResNet-50 convs + fc (25.5M)": ConvBank(resnet50_conv_shapes(), head=(1000, 2048)),
                        "ResNet-20 (0.27M)": build_model("resnet20", num_classes=10, in_channels=3, seed=0)},
                k_shapes=[(512, 512, 3, 3), (640, 640, 3, 3)], k_fractions=[0.002, 0.01, 0.05, 0.1, 0.3, 0.5, 1.0],
                repeats=5, model_repeats=3, min_sample_s=0.02)


def _ms(seconds: float) -> str:
    if math.isnan(seconds):
        return "–"
    ms = 1e3 * seconds
    return f"{ms:.3g}" if abs(ms) >= 1 else f"{ms:.2f}"


def _ratio(num: float, den: float) -> str:
    return f"{num / den:.1f}×" if den > 0 and num > 0 else "n/a"


def overhead_table(rows: dict[str, dict[str, dict[str, float]]]) -> list[str]:
    """One row per shape/model: SGD's step, then per method overhead (own work), penalty ÷ spectral 30 %."""
    return H.table(["", "SGD step ms", *(f"{n}: overhead (own) ms" for n in LAYER_METHODS[1:]), "penalty ÷ spectral 30%"],
                   [[label, _ms(res["SGD"]["step"]), *(f"{_ms(res[n]['overhead'])} ({_ms(res[n]['own'])})"
                                                       for n in LAYER_METHODS[1:]),
                     _ratio(res[PENALTY]["overhead"], res[SPECTRAL]["overhead"])] for label, res in rows.items()])


def plot_scaling(layers: dict, k_results: dict[Shape, dict[str, float]], path: Path) -> None:
    plt = H.pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.6))
    shapes = sorted(layers, key=lambda s: math.prod(matrix_shape(s)))
    sizes = [math.prod(matrix_shape(s)) for s in shapes]
    for name in LAYER_METHODS[1:]:
        left.loglog(sizes, [max(layers[s][name]["overhead"], 1e-6) * 1e3 for s in shapes], "o-", label=name)
    left.loglog(sizes, [layers[s]["SGD"]["step"] * 1e3 for s in shapes], "k--", label="SGD step itself")
    left.set(xlabel="matrix entries c·9c (3×3 conv c → c)", ylabel="overhead over SGD per step (ms)",
             title="Optimizer-step overhead vs layer size")
    for shape, res in k_results.items():
        m, p = matrix_shape(shape)
        ks = [(int(key[2:]), v) for key, v in res.items() if key.startswith("k=")]
        line, = right.semilogx([k / min(m, p) for k, _ in ks], [v * 1e3 for _, v in ks], "o-", label=f"spectral LMO {m}×{p}")
        right.axhline(res["penalty"] * 1e3, color=line.get_color(), ls="--", label=f"nuclear penalty fwd+bwd {m}×{p}")
    right.set(xlabel="k / rank", ylabel="ms", yscale="log", title="Spectral-k-support LMO vs k")
    for ax in (left, right):
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    H.save_plot(fig, path)


def header(title: str, command: str) -> str:
    one_thread = H.section("cost_one_thread") if torch.get_num_threads() == 1 else ""
    return H.section("cost_header", title=title, command=command, one_thread=one_thread)


def measure(p: dict) -> dict:
    """Every measurement of the "cost" variant on the plan `p`."""
    repeats, min_sample_s = p["repeats"], p["min_sample_s"]
    layers = {s: optimizer_step_costs(ConvBank([s]), LAYER_METHODS, repeats, min_sample_s=min_sample_s) for s in p["layers"]}
    errors = {(s, spec): spectral_lmo_error(s, 0.3, spec) for s in p["goal_shapes"] for spec in ("gaussian", "1/√i")}
    models = {label: optimizer_step_costs(model, LAYER_METHODS, p["model_repeats"], min_sample_s=min_sample_s)
              for label, model in p["models"].items()}
    k_results = {s: k_scaling(s, p["k_fractions"], repeats, min_sample_s) for s in p["k_shapes"]}
    return dict(layers=layers, errors=errors, models=models, k_scaling=k_results)


def goal_rows(p: dict, measured: dict) -> list[list]:
    """Penalty ÷ spectral-30 % overhead against the goal ≥ 5×, per goal shape (with the top-k SVD
    errors) and per whole model."""
    def verdict(res: dict) -> list[str]:
        ratio = res[PENALTY]["overhead"] / res[SPECTRAL]["overhead"]
        return [f"{ratio:.1f}×", "met" if ratio >= 5 else "missed"]
    rows = []
    for s in p["goal_shapes"]:
        err = "; ".join(f"{spec}: {e[0]:.0e} / {e[1]:.0e} / {e[2]:.0e}" for spec in ("gaussian", "1/√i")
                        for e in [measured["errors"][(s, spec)]])
        rows.append(["×".join(map(str, matrix_shape(s))), *verdict(measured["layers"][s]), err])
    return rows + [[f"{label}, all parameters", *verdict(r), ""] for label, r in measured["models"].items()]


def cost_section(p: dict, measured: dict, command: str) -> str:
    layers, models = measured["layers"], measured["models"]
    layer_rows = {f"{m}×{q}" + (" (1×1)" if s[2] == 1 else ""): layers[s] for s in p["layers"] for m, q in [matrix_shape(s)]}
    title = "Cost per optimizer step beyond SGD (`benchmarks/bench_cost.py`)"
    return H.section("cost", header=header(title, command), repeats=p["repeats"], model_repeats=p["model_repeats"],
                     goals=H.table(["shape / model", "penalty ÷ spectral 30 %", "goal ≥ 5×", "top-k SVD error"],
                                   goal_rows(p, measured)),
                     models=overhead_table(models), layers=overhead_table(layer_rows),
                     setup=H.table(["model", *LAYER_METHODS], [[label, *(f"{r[n]['setup']:.2f}" for n in LAYER_METHODS)]
                                                               for label, r in models.items()]))


def scaling_section(k_results: dict, command: str) -> str:
    k_rows = [[f"{m}×{q}", " | ".join(f"{key}: {_ms(v)}" for key, v in res.items() if key.startswith("k=")),
               _ms(res["penalty"])] for s, res in k_results.items() for m, q in [matrix_shape(s)]]
    title = "Cost scaling: layer size and k (`benchmarks/bench_cost.py`)"
    return H.section("cost_scaling", header=header(title, command),
                     table=H.table(["matrix", "spectral LMO ms per k", "nuclear penalty fwd+bwd ms"], k_rows))


def cost(args) -> dict[str, str]:
    p = plan(args.quick)
    args.measured = measured = measure(p)
    plot_scaling({s: measured["layers"][s] for s in p["layers"] if s[2] == 3}, measured["k_scaling"],
                 (args.results_dir or args.results) / "cost_scaling.png")
    return {"cost": cost_section(p, measured, args.command),
            "cost_scaling": scaling_section(measured["k_scaling"], args.command)}


def step_arguments(parser) -> None:
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--training", action="store_true", help="also the whole ResNet-20 training step (CPU)")


VARIANTS = {
    "step": H.Variant(step, "SFW's step against SGD's and its LMOs (section sfw_step)", step_arguments),
    "cost": H.Variant(cost, "overhead per layer and model, scaling (sections cost, cost_scaling)", threads=2,
                      arguments=lambda p: p.add_argument("--results-dir", type=Path, help="where cost_scaling.png goes")),
}


def main(argv: list[str] | None = None):
    return H.main("bench_cost.py", __doc__, VARIANTS, argv)


if __name__ == "__main__":
    main()
