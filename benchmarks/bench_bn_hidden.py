"""Why the BN radius matters: BatchNorm hides filters that SFW has shrunk.

Run:  python benchmarks/bench_bn_hidden.py     (3 trainings of ~80 s on one core; writes the
                                                "bn_hidden" section of BENCHMARKS.md)

A conv followed by BN is invariant to each filter's scale: BN divides the filter's output by its
running std σ and multiplies by γ, so a filter that SFW's steps (θ ← (1 − η)θ + ηv) have shrunk can
still carry signal. Global magnitude pruning deletes such filters first. For every conv/BN pair this
counts the "shrunken" filters (L2 norm < 10% of the layer's largest) and compares their mean |γ|
with the others'; then it prunes. Data, model and training: those of benchmarks/configs/quality.yaml
(seed 0), with k-support at the paper's settings, with and without `norm_radius: 10`, and SGD.
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import time

import torch
import yaml
from _report import machine_line, write_section
from bench_quality import CONFIG, batches, calibration, load_data, train_one

from sparsefw.compress import recalibrate_batchnorm
from sparsefw.experiments.evaluation import evaluate
from sparsefw.experiments.sweep import compress_model

SHRUNKEN = 0.1          # a filter is shrunken below this fraction of its layer's largest L2 norm
RUNS = {
    "k-support, radii width · E‖θ_init‖": {"name": "sfw", "momentum": 0.9, "rescale": "gradient", "lr": 0.1,
                                            "mode": "k_support", "k": 0.1, "width": 10, "norm_radius": "init"},
    "k-support, `norm_radius: 10`": {"name": "sfw", "momentum": 0.9, "rescale": "gradient", "lr": 0.1,
                                     "mode": "k_support", "k": 0.1, "width": 10, "norm_radius": 10},
    "SGD, weight decay 5e-4": {"name": "sgd", "lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4},
}


def conv_bn_pairs(model: torch.nn.Module) -> list[tuple[torch.nn.Conv2d, torch.nn.BatchNorm2d]]:
    """(conv, the BN right after it) in module order — the layout of the library's CNN."""
    mods = [m for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.BatchNorm2d))]
    return [(a, b) for a, b in zip(mods, mods[1:])
            if isinstance(a, torch.nn.Conv2d) and isinstance(b, torch.nn.BatchNorm2d)]


def shrunken_filters(conv: torch.nn.Conv2d, bn: torch.nn.BatchNorm2d) -> tuple[int, float | None, float | None]:
    """(number of shrunken filters, their mean |γ|, the other filters' mean |γ|); None for an empty group."""
    norms = conv.weight.detach().flatten(1).norm(dim=1)
    small, gamma = norms < SHRUNKEN * norms.max(), bn.weight.detach().abs()
    mean = lambda t: float(t.mean()) if t.numel() else None  # noqa: E731
    return int(small.sum()), mean(gamma[small]), mean(gamma[~small])


def _gamma(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f}"


def _shrunken_cell(model: torch.nn.Module) -> str:
    """Per conv layer: "shrunken/filters: mean |γ| shrunken vs others"."""
    parts = []
    for conv, bn in conv_bn_pairs(model):
        n, g_small, g_rest = shrunken_filters(conv, bn)
        parts.append(f"{n}/{conv.out_channels}: {_gamma(g_small)} vs {_gamma(g_rest)}")
    return ", ".join(parts)


def main() -> None:
    torch.set_num_threads(1)
    cfg = yaml.safe_load(CONFIG.read_text())
    train, _, test, info = load_data(cfg)
    test_batches = batches(test, cfg["data"]["eval_batch_size"])
    calib = calibration(cfg, train)
    example = test_batches[0][0][:1]
    acc = lambda net: evaluate(net, test_batches, "classification", info.num_classes)["accuracy"]  # noqa: E731
    t0 = time.perf_counter()
    rows = []
    for label, opt in RUNS.items():
        model, _ = train_one(cfg, opt, 0, train, info)
        cells = []
        for kind, level in (("unstructured", 0.9), ("filters", 0.5)):
            small = compress_model(model, kind, level, example, lowrank_layers="conv").eval()
            cells.append(f"{acc(small):.3f} ({acc(recalibrate_batchnorm(small, calib)):.3f})")
        rows.append(f"| {label} | {acc(model):.3f} | {_shrunken_cell(model)} | {cells[0]} | {cells[1]} |")
    widths = "-".join(str(w) for w in cfg["model"]["widths"])
    text = [
        "## BatchNorm hides shrunken filters (`benchmarks/bench_bn_hidden.py`)", "",
        f"Command: `python benchmarks/bench_bn_hidden.py` ({(time.perf_counter() - t0) / 60:.0f} min). {machine_line()}", "",
        f"Small CNN {widths} of benchmarks/configs/quality.yaml (its data, {cfg['training']['epochs']} epochs, seed 0), "
        "k-support at the paper's "
        f"settings (lr 0.1, k 0.1, width 10). Per conv layer: shrunken filters (L2 norm below {SHRUNKEN:.0%} of the "
        "layer's largest) / filters, and the mean |γ| of their BN channels vs the other channels'. Test accuracy after "
        f"one-shot compression; in brackets after BN recalibration on {len(calib)} training batches.", "",
        "| run | dense | shrunken filters per conv: mean \\|γ\\| shrunken vs others | 90% unstructured | 50% filters |",
        "|---|---|---|---|---|", *rows, "",
        "Reading: see docs/tuning.md (\"Why a small γ ball makes magnitude pruning work\").",
    ]
    write_section("bn_hidden", "\n".join(text))
    print("\n".join(text))


if __name__ == "__main__":
    main()
