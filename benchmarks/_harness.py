"""What every benchmark shares: training, accuracy, interleaved timing, markdown tables, run logs,
the BENCHMARKS.md section writer and a `main` that owns the command line.

Timing. Model latency goes through the library's own `sparsefw.compress.measure_latency` (eval mode,
no grad, models interleaved round by round): it is what users call, and what the recorded sections
measured. Other callables (optimizer steps, LMOs, SVDs) go through `interleaved`. Not
`torch.utils.benchmark`: its `Timer` measures one statement at a time (`blocked_autorange` runs a
block of one statement, then the next), so on a shared machine a load change between blocks lands
on one side of a ratio; here every callable runs once per round, the order rotating, so drift hits
all alike. Its `Compare` prints console tables, not markdown.

Sections. Each benchmark owns the text between `<!-- name:start -->` and `<!-- name:end -->` of
BENCHMARKS.md; other text (readings written after a run, dated records) is kept as it is. The fixed
prose of a section (set-up, methods, how to read it) is a template, `sections/<name>.md`, that
`section` fills with the text computed from the numbers; the scripts hold code and tables.

Threads. A script imports this module first, before torch: it sets OMP_WAIT_POLICY=PASSIVE (unless
set), which OpenMP reads once, when torch loads it. Idle OpenMP threads then sleep instead of
spinning: on a shared CPU, spinning made the multi-threaded LAPACK SVD 10-20x slower (13.6 s vs
0.84 s for 512x4608).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import shlex
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from sparsefw.experiments.evaluation import evaluate  # noqa: E402
from sparsefw.experiments.io import write_text  # noqa: E402

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
SECTIONS = HERE / "sections"
BENCHMARKS_MD = HERE.parent / "BENCHMARKS.md"


# --- training and scoring ------------------------------------------------------------------------
def fit(model, opt, x, y, epochs: int, batch_size: int, generator: torch.Generator, loss=F.cross_entropy,
        lr_factor: Callable[[int], float] | None = None, penalty: Callable[[], torch.Tensor] | None = None,
        after_step: Callable[[], None] | None = None) -> float:
    """`epochs` epochs over (x, y) in batches drawn in a seeded order (`generator`), the learning rate
    scaled by `lr_factor(step)` (default: linear decay to 0), `penalty()` added to the loss. Leaves
    the model in eval mode; returns the mean training loss (without penalty) of the last epoch."""
    total = epochs * math.ceil(len(x) / batch_size)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor or (lambda s: max(0.0, 1.0 - s / total)))
    model.train()
    for _ in range(epochs):
        order, seen, summed = torch.randperm(len(x), generator=generator), 0, 0.0
        for i in range(0, len(x), batch_size):
            idx = order[i:i + batch_size]
            value = loss(model(x[idx]), y[idx])
            objective = value if penalty is None else value + penalty()
            opt.zero_grad(set_to_none=True)
            objective.backward()
            opt.step()
            if after_step is not None:
                after_step()
            sched.step()
            seen, summed = seen + len(idx), summed + value.item() * len(idx)
    model.eval()
    return summed / max(seen, 1)


def batches(x, y, size: int = 500) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(x[i:i + size], y[i:i + size]) for i in range(0, len(x), size)]


def accuracy(model, x, y, num_classes: int, size: int = 500) -> float:
    """Test accuracy in batches of `size` (the library's `evaluate`)."""
    return evaluate(model, batches(x, y, size), "classification", num_classes)["accuracy"]


# --- timing ------------------------------------------------------------------------------------
def interleaved(fns: dict[str, Callable[[], Any]], repeats: int, min_sample_s: float = 0.01, max_inner: int = 50,
                clock: Callable[[], float] = time.perf_counter) -> dict[str, list[float]]:
    """Seconds per call of every callable, one sample per round.

    Each callable is warmed up once (a warm-up lasting ≥ `min_sample_s` gives n = 1) or else timed
    once more to choose an inner count n with n calls lasting ≥ `min_sample_s` (at most
    `max_inner`); then `repeats` rounds time n calls of each callable in turn, starting each round
    one callable later, so slow drifts of the machine hit all alike. `clock=time.thread_time` at one
    thread: CPU time, which other processes do not inflate."""
    if repeats < 1:
        raise ValueError(f"repeats must be ≥ 1, got repeats={repeats!r}")
    inner = {}
    for name, fn in fns.items():
        start = clock()
        fn()
        once = clock() - start
        if once < min_sample_s:
            start = clock()
            fn()
            once = clock() - start
        inner[name] = max(1, min(max_inner, math.ceil(min_sample_s / max(once, 1e-7))))
    names = list(fns)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            n, fn = inner[name], fns[name]
            start = clock()
            for _ in range(n):
                fn()
            samples[name].append((clock() - start) / n)
    return samples


def medians(samples: dict[str, list[float]]) -> dict[str, float]:
    return {name: statistics.median(s) for name, s in samples.items()}


# --- markdown ----------------------------------------------------------------------------------
def table(header: list[str], rows: list[list]) -> list[str]:
    """A markdown table: a header row, the separator, one line per row (cells as given)."""
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + \
        ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]


def mean_range(values: list[float], digits: int = 3) -> str:
    """"mean (min–max)"."""
    return f"{statistics.mean(values):.{digits}f} ({min(values):.{digits}f}–{max(values):.{digits}f})"


def machine_line() -> str:
    """One line naming the machine the numbers come from."""
    dev = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__}, "
            f"{torch.get_num_threads()} torch threads, {dev}.")


def load_line() -> str:
    return "Load average (1/5/15 min) at the end of the run: {:.1f} / {:.1f} / {:.1f}".format(*os.getloadavg())


def section(template: str, **fields) -> str:
    """`sections/<template>.md` with its `{fields}` filled by `str.format` (a list of lines is joined
    by newlines); `{machine}` and `{load}` are the machine and load lines."""
    text = (SECTIONS / f"{template}.md").read_text()
    fields = {k: "\n".join(map(str, v)) if isinstance(v, list) else v for k, v in fields.items()}
    return text.format(**{"machine": machine_line(), "load": load_line(), **fields}).strip("\n")


def write_section(name: str, markdown: str, path: Path = BENCHMARKS_MD) -> None:
    """Replace (or append) the block `name` of `path`, atomically."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    block = f"{start}\n{markdown.strip()}\n{end}"
    text = path.read_text() if path.exists() else "# Benchmarks\n\nEach section is written by the command shown in it.\n"
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block + "\n"
    write_text(path, text)


def save_plot(fig, path: Path) -> Path:
    from sparsefw.experiments.io import save_figure
    import matplotlib.pyplot as plt
    try:
        return save_figure(path, fig)
    finally:
        plt.close(fig)


def pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


# --- run logs ----------------------------------------------------------------------------------
def read_jsonl(path: Path) -> list[dict]:
    """Every record of the log (none if it does not exist yet)."""
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def append_jsonl(path: Path, record: dict) -> None:
    """Append one record as a single line, flushed to disk: an interrupted benchmark resumes where it
    stopped, and two processes (shards) can share one log."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()
        os.fsync(f.fileno())


def run_logged(path: Path, key: dict, fn: Callable[[], dict]) -> None:
    """fn() → record fields, appended to the log `path` under `key` unless a record with `key` is there
    (an interrupted benchmark resumes; shards skip each other's runs); prints the key and the seconds."""
    if any(all(r.get(k) == v for k, v in key.items()) for r in read_jsonl(path)):
        return
    start = time.perf_counter()
    append_jsonl(path, {**key, **fn()})
    print(f"{time.strftime('%H:%M:%S')} {key} {time.perf_counter() - start:.0f} s", flush=True)


# --- the command line --------------------------------------------------------------------------
@dataclass
class Variant:
    """One sub-command: `run(args)` → {section name: markdown}; `arguments(parser)` adds its options.
    `report`: it can rebuild its sections from stored results (`--report`); `shard`: it takes --shard i/n,
    parsed to (i, n): every n-th run starting at i, so that n processes share a run log."""
    run: Callable[[argparse.Namespace], dict[str, str]]
    help: str
    arguments: Callable[[argparse.ArgumentParser], None] = lambda parser: None
    threads: int = 1
    report: bool = False
    shard: bool = False


def main(script: str, doc: str, variants: dict[str, Variant], argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line of `script` (a sub-command per variant, unless its only variant is named
    after it; common options --threads, --quick, --report, --shard, --out), set the torch threads, run the
    variant and write its sections.
    `--quick` runs seconds-long sizes into a temporary `args.results` and only prints, unless --out is given.
    Returns the parsed arguments, with the sections written (`args.sections`)."""
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog=f"benchmarks/{script}", description=doc,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    single = list(variants) == [script.removeprefix("bench_").removesuffix(".py")]    # no sub-command
    subs = None if single else parser.add_subparsers(dest="variant", required=True)
    for name, v in variants.items():
        p = subs.add_parser(name, help=v.help, description=v.help) if subs else parser
        p.add_argument("--threads", type=int, default=v.threads, help="torch threads")
        p.add_argument("--quick", action="store_true", help="smoke run in seconds: tiny sizes, temporary files")
        p.add_argument("--out", type=Path, help="markdown file for the sections (default BENCHMARKS.md)")
        if v.report:
            p.add_argument("--report", action="store_true", help="only rebuild the sections from stored results")
        if v.shard:
            p.add_argument("--shard", type=lambda text: tuple(map(int, text.split("/"))), default=(0, 1),
                           help="i/n: every n-th run starting at i")
        v.arguments(p)
    args = parser.parse_args(argv)
    variant = variants[args.variant] if subs else next(iter(variants.values()))
    if args.threads < 1:
        parser.error(f"--threads must be ≥ 1, got {args.threads}")
    torch.set_num_threads(args.threads)
    args.command = " ".join(["python", f"benchmarks/{script}", *map(shlex.quote, argv)])
    args.results = Path(tempfile.mkdtemp(prefix="quick-")) if args.quick else RESULTS   # run logs, plots
    args.sections = sections = variant.run(args)
    for name, text in sections.items():
        if args.out or not args.quick:
            write_section(name, text, args.out or BENCHMARKS_MD)
        print(text if args.quick else f"wrote the '{name}' section", flush=True)
    return args
