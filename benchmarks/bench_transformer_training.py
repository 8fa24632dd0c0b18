"""Training a small transformer with SFW (issue 25, item 1): AdamW against
`SFW(constrain(model, mode, example_inputs=x))` with nothing else set, dense accuracy and the share
kept after truncating every hidden Linear layer of the blocks to ¼ and ⅛ of its rank
(`sparsefw.compress.factorize(model.blocks, rank=r, layers="linear")`, no retraining).

Task: Fashion-MNIST (offline), each 28×28 image as 16 tokens of 7×7 patches; a pre-LN ViT-like
model (patch Linear 49 → d, learned positions, `blocks` pre-LN blocks with q/k/v/o Linear layers and
a GELU FFN, final LayerNorm, mean pool, Linear head). Every run: batch 128, linear lr decay to 0,
one thread.

Methods ("name" or "name:key=value,..."):
    adamw[:lr=..,wd=..]        AdamW lr 3e-3, weight decay 0.05 (dense baseline)
    sfw:<mode>[:k=..,spectral_width=..,fixed_step=..,lr=..,rest=adam|momentum,rest_lr=..,matrix_dir=adam]
                               SFW(constrain(model, mode, example_inputs=x, **opts), lr=lr or 0.1);
                               rest: the groups outside the spectral regions get that direction,
                               lr rest_lr (3e-3) and the gradient-rescaled step (variants measured);
                               matrix_dir=adam: the matrix groups' LMO takes Adam's direction (AdaSFW)

Run:  python benchmarks/bench_transformer_training.py [--quick] [--seeds 0 1 2] [--methods ...]
      python benchmarks/bench_transformer_training.py --cnn      (the spectral modes on two CNN tasks)
Results: one JSON line per run appended to benchmarks/results/transformer_training.jsonl (runs
already there are skipped), then a markdown table (mean ± std over seeds).
"""
from __future__ import annotations

import argparse
import copy
import math
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import sparsefw  # noqa: E402
from _harness import append_jsonl, read_jsonl  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "transformer_training.jsonl"
RANKS = (0.25, 0.125)
DEFAULT_METHODS = ["adamw", "sfw:spectral", "sfw:spectral_polytope", "sfw:spectral_polytope:k=0.125"]


class Block(nn.Module):
    """Pre-LN transformer block with separate q, k, v, o projections (each a factorizable Linear)."""

    def __init__(self, d: int, heads: int, ffn: int):
        super().__init__()
        self.heads = heads
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.q, self.k, self.v, self.o = (nn.Linear(d, d) for _ in range(4))
        self.fc1, self.fc2 = nn.Linear(d, ffn), nn.Linear(ffn, d)

    def forward(self, x):
        b, t, d = x.shape
        h = self.ln1(x)
        q, k, v = (f(h).view(b, t, self.heads, -1).transpose(1, 2) for f in (self.q, self.k, self.v))
        x = x + self.o(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, t, d))
        return x + self.fc2(F.gelu(self.fc1(self.ln2(x))))


class TinyViT(nn.Module):
    def __init__(self, d=64, heads=4, ffn=128, blocks=2, tokens=16, patch=49, classes=10):
        super().__init__()
        self.embed = nn.Linear(patch, d)
        self.pos = nn.Parameter(0.02 * torch.randn(tokens, d))
        self.blocks = nn.Sequential(*(Block(d, heads, ffn) for _ in range(blocks)))
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, classes)

    def forward(self, x):
        return self.head(self.norm(self.blocks(self.embed(x) + self.pos)).mean(1))


def patches(images: torch.Tensor) -> torch.Tensor:
    """(N, 1, 28, 28) → (N, 16, 49): 7×7 patches in row-major order."""
    return images.unfold(2, 7, 7).unfold(3, 7, 7).reshape(images.shape[0], 16, 49)


def load(n_train: int, n_test: int):
    from sparsefw.data import get_datasets
    train, test, _ = get_datasets("fashion_mnist", subset=(n_train, n_test))
    return (patches(train.images), train.targets.long()), (patches(test.images), test.targets.long())


@torch.no_grad()
def accuracy(model: nn.Module, data) -> float:
    model.eval()
    x, y = data
    correct = sum(int((model(xb).argmax(1) == yb).sum()) for xb, yb in zip(x.split(500), y.split(500)))
    model.train()
    return correct / len(y)


def parse(method: str) -> tuple[str, str | None, dict]:
    """'sfw:spectral_polytope:k=0.125,lr=0.05' → ("sfw", "spectral_polytope", {"k": 0.125, "lr": 0.05})."""
    kind, _, rest = method.partition(":")
    mode, _, opts = rest.partition(":") if kind != "adamw" else ("", "", rest)
    options = {}
    for item in filter(None, opts.split(",")):
        key, _, value = item.partition("=")
        try:
            options[key] = int(value) if value.isdigit() and key == "k" else float(value)
        except ValueError:
            options[key] = value
    return kind, mode or None, options


def optimizer(method: str, model: nn.Module, example: torch.Tensor) -> torch.optim.Optimizer:
    kind, mode, options = parse(method)
    if kind == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=options.get("lr", 3e-3), weight_decay=options.get("wd", 0.05))
    lr, rest, rest_lr = options.pop("lr", 0.1), options.pop("rest", None), options.pop("rest_lr", 3e-3)
    matrix_direction = options.pop("matrix_dir", None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        groups = sparsefw.constrain(model, mode, example_inputs=example, **options)
    for group in groups:       # variants for the parameters outside / inside the matrix regions
        matrix = type(group["constraint"]).__name__ in ("SpectralBall", "SpectralPolytope")
        if rest is not None and not matrix:
            group.update(direction="adam" if rest == "adam" else "momentum", lr=rest_lr, rescale="gradient")
        elif matrix_direction is not None and matrix:
            group["direction"] = matrix_direction          # AdaSFW: Adam-preconditioned LMO input
    return sparsefw.SFW(groups, lr=lr)


def run(method: str, seed: int, epochs: int, train, test) -> dict:
    torch.manual_seed(seed)
    model = TinyViT()
    x, y = train
    opt = optimizer(method, model, x[:64])
    steps = epochs * math.ceil(len(y) / 128)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 1 - t / steps)
    gen = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    for _ in range(epochs):
        order = torch.randperm(len(y), generator=gen)
        for idx in order.split(128):
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    record = dict(method=method, seed=seed, epochs=epochs, n_train=len(y), n_test=len(test[1]),
                  seconds=round(time.perf_counter() - start, 1), loss=round(loss.item(), 4),
                  dense=accuracy(model, test))
    for r in RANKS:
        small = copy.deepcopy(model)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            small.blocks = sparsefw.compress.factorize(model.blocks, rank=r, layers="linear", skip_no_saving=False)
        record[f"rank_{r}"] = accuracy(small, test)
    return record


def table(records: list[dict]) -> str:
    """Markdown: per method, mean ± std over seeds of dense accuracy and kept shares."""
    by: dict[tuple, list[dict]] = {}
    for r in records:
        by.setdefault((r["method"], r["epochs"], r["n_train"]), []).append(r)
    lines = ["| method | epochs | n_train | seeds | dense | kept at ¼ rank | kept at ⅛ rank | s/run |",
             "|---|---|---|---|---|---|---|---|"]

    def stat(values):
        return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}" if len(values) > 1 \
            else f"{values[0]:.3f}"
    for (method, epochs, n), rs in by.items():
        kept = [[x[f"rank_{r}"] / x["dense"] for x in rs] for r in RANKS]
        lines.append(f"| {method} | {epochs} | {n} | {len(rs)} | {stat([x['dense'] for x in rs])} | "
                     f"{stat(kept[0])} | {stat(kept[1])} | {statistics.mean(x['seconds'] for x in rs):.0f} |")
    return "\n".join(lines)


def cnn_check(seeds: list[int], log: Path) -> None:
    """The spectral modes on two BN CNN tasks of bench_robustness.py (digits; Fashion-MNIST, the held-out
    task) against the CNN low-rank default "spectral_k_support": dense and kept at 50 % / 25 % rank
    (`factorize(layers="conv")`), logged to `log` with "task"."""
    import _tasks as T
    from bench_robustness import HELD_OUT, tasks
    chosen = [t for t in tasks() if t.name.startswith("digits") or t.name == HELD_OUT]
    levels = [lv for lv in T.LEVELS if lv[0] == "lowrank"]
    for task in chosen:
        for seed in seeds:
            for method in ("spectral_k_support", "spectral_polytope", "spectral"):
                def one():
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        model, seconds = T.train(task, method, seed)
                        return {"seconds": round(seconds, 1), "scores": T.sweep(task, model, levels)}
                T.run_logged(log, {"task": task.name, "method": method, "seed": seed}, one)
    for r in read_jsonl(log):
        print(r["task"], r["method"], r["seed"], {k: round(v, 3) for k, v in r["scores"].items()})


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="1000 samples, 2 epochs, seed 0, no log")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--methods", nargs="+", default=DEFAULT_METHODS)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--train", type=int, default=10000)
    ap.add_argument("--test", type=int, default=5000)
    ap.add_argument("--log", type=Path, default=RESULTS)
    ap.add_argument("--cnn", action="store_true", help="the spectral modes on two CNN tasks instead (cnn_check)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    if args.cnn:
        default = RESULTS.with_name("transformer_training_cnn.jsonl")
        return cnn_check(args.seeds, default if args.log == RESULTS else args.log)
    if args.quick:
        args.seeds, args.epochs, args.train, args.test = [0], 2, 1000, 500
    train, test = load(args.train, args.test)
    done = {(r["method"], r["seed"], r["epochs"], r["n_train"]) for r in read_jsonl(args.log)}
    records = []
    for seed in args.seeds:
        for method in args.methods:
            key = (method, seed, args.epochs, args.train)
            if key in done and not args.quick:
                continue
            record = run(method, seed, args.epochs, train, test)
            print(record, flush=True)
            records.append(record)
            if not args.quick:
                append_jsonl(args.log, record)
    wanted = {(m, s) for m in args.methods for s in args.seeds}
    shown = records if args.quick else [r for r in read_jsonl(args.log) if (r["method"], r["seed"]) in wanted
                                        and r["epochs"] == args.epochs and r["n_train"] == args.train]
    print(table(shown))


if __name__ == "__main__":
    main()
