"""2:4 semi-structured pruning after training: SFW in mode "nm_k_support" (joint gauge, the default, and
the product-of-balls gauge combine="max") against SGD + weight decay and SFW "k_support", each model
then pruned once to 2:4 by magnitude (`prune(pattern="2:4")`) and by Wanda (`criterion="wanda"`,
calibration: 4 random training batches of 64), no retraining; also the magnitude-pruned model after
BatchNorm recalibration on 20 random training batches (`compress.recalibrate_batchnorm`, not part
of the paper's protocol). Accuracy, not time.

Run:  python benchmarks/bench_nm.py [--tasks digits,mlp,fashion] [--seeds 0,1,2] [--pattern 2:4]
      (prints a markdown table, appends results/nm_runs.jsonl; "magnitude unstr.": global magnitude
      pruning at the pattern's sparsity 1 − N/M, for comparison)
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import json
import math
import warnings
from pathlib import Path

import torch

import _tasks as T
import sparsefw
from sparsefw import compress
from sparsefw.constraints import NMKSupportBall
from sparsefw.data import get_datasets
from sparsefw.models import build_model

RESULTS = Path(__file__).resolve().parent / "results"
METHODS = ("sgd_wd", "k_support", "nm_k_support", "nm_max")


def _tensors(ds):
    return ds[torch.arange(len(ds))]


def tasks() -> dict[str, T.Task]:
    digits_tr, digits_te, _ = get_datasets("digits")
    mnist_tr, mnist_te, _ = get_datasets("mnist5k")
    return {"digits": T.Task("digits (8×8), CNN 16-16-32-32 (BN)",
                             lambda: build_model("cnn", 10, 1, widths=[16, 16, 32, 32]),
                             _tensors(digits_tr), _tensors(digits_te), 10, epochs=10, batch_size=32),
            "mlp": T.Task("MNIST-5k, MLP 784-300-100-10", lambda: build_model("mlp", 10, 1, image_size=28),
                          _tensors(mnist_tr), _tensors(mnist_te), 10, epochs=5),
            "fashion": T.Task("Fashion-MNIST 4k, CNN 16-16-32-32 (BN)",
                              lambda: build_model("cnn", 10, 1, widths=[16, 16, 32, 32]), *_fashion(), 10, epochs=4)}


def _fashion():
    train, test, _ = get_datasets("fashion_mnist", subset=(4000, 2000))
    return _tensors(train), _tensors(test)


def product_optimizer(model, method, example, constraint, sfw):
    """SFW "nm_k_support" with every N:M region replaced by the product of group balls (combine="max"),
    radius τ/√G per group (vertices of L2 norm τ, as the joint ball's)."""
    groups = sparsefw.constrain(model, "nm_k_support", example_inputs=example, **(constraint or {}))
    for g in groups:
        c = g["constraint"]
        if isinstance(c, NMKSupportBall):
            g["constraint"] = region = NMKSupportBall(c.shape, c.k, c.m, radius=c.radius / math.sqrt(c.groups),
                                                      dim=c.dim, combine="max")
            with torch.no_grad():
                g["params"][0].copy_(region.shift_inside(g["params"][0]))
    return sparsefw.SFW(groups)


def one(task: T.Task, method: str, seed: int, pattern: str) -> dict:
    method, _, trained = method.partition("@")       # "nm_k_support@1:4": trained for 1:4, pruned to `pattern`
    factory = product_optimizer if method == "nm_max" else None
    constraint = {"k": trained or pattern} if method in ("nm_k_support", "nm_max") else None
    model, seconds = T.train(task, "nm_k_support" if method == "nm_max" else method, seed, constraint=constraint,
                             optimizer_factory=factory)
    x = task.train[0]        # a random sample: some tasks' training tensors are sorted by class
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    calibration = [x[order[i * 64:(i + 1) * 64]] for i in range(4)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        n, m = map(int, pattern.split(":"))
        pruned = compress.prune(model, pattern=pattern)
        recal = [x[order[i * 64:(i + 1) * 64]] for i in range(20)]
        return {"dense": T.score(task, model),
                "magnitude N:M": T.score(task, pruned),
                "magnitude N:M, BN recal.": T.score(task, compress.recalibrate_batchnorm(pruned, recal)),
                "wanda N:M": T.score(task, compress.prune(model, pattern=pattern, criterion="wanda",
                                                          calibration=calibration)),
                "magnitude unstr.": T.score(task, compress.prune(model, 1 - n / m)), "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", default="digits,mlp,fashion")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--pattern", default="2:4", help="trained for (nm_k_support's k) and pruned to")
    args = parser.parse_args()
    torch.set_num_threads(1)
    all_tasks = tasks()
    RESULTS.mkdir(exist_ok=True)
    rows = []
    for key in args.tasks.split(","):
        for method in args.methods.split(","):
            for seed in map(int, args.seeds.split(",")):
                r = {"task": key, "method": method, "seed": seed, "pattern": args.pattern,
                     **one(all_tasks[key], method, seed, args.pattern)}
                rows.append(r)
                print(json.dumps(r), flush=True)
                with open(RESULTS / "nm_runs.jsonl", "a") as f:
                    f.write(json.dumps(r) + "\n")
    cols = ("dense", "magnitude N:M", "magnitude N:M, BN recal.", "wanda N:M", "magnitude unstr.")
    print("| task | method | " + " | ".join(cols) + " |\n|---|---|" + "---|" * len(cols))
    for key in args.tasks.split(","):
        for method in args.methods.split(","):
            rs = [r for r in rows if r["task"] == key and r["method"] == method]
            cells = [f"{sum(r[c] for r in rs) / len(rs):.3f} ± {_spread([r[c] for r in rs]):.3f}" for c in cols]
            print(f"| {key} | {method} | " + " | ".join(cells) + " |")


def _spread(values):
    mean = sum(values) / len(values)
    return (sum((v - mean) ** 2 for v in values) / max(1, len(values) - 1)) ** 0.5


if __name__ == "__main__":
    main()
