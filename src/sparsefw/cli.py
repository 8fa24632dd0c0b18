"""The `sparsefw` command line.

    sparsefw train --config cifar10_resnet56 [--set optimizer.lr=0.05 ...] [--method NAME] [--out DIR] [--resume]
    sparsefw sweep --run RUN_DIR [--set sweep.unstructured=[0.5,0.9]] [--out DIR]
    sparsefw compress --run RUN_DIR --kind channels --level 0.5 [--bn-recalibration 20] [--out DIR]
    sparsefw report RUN_DIR ... --out DIR
    sparsefw demo [--out runs/demo]

Configuration errors exit with status 2 and a message naming the key; nothing is written then.
A missing, truncated or corrupt checkpoint also exits with status 2 and a message naming the file.
Data-parallel training: `sparsefw train ... --nproc-per-node N` (or `torchrun --nproc_per_node=N -m
sparsefw.cli train ...`); `--fsdp` shards the model with FSDP2 instead of replicating it with DDP
(docs/distributed.md). Ctrl-C exits with status 130 and one line: the last checkpoint and the
command that resumes it.

OMP_WAIT_POLICY=PASSIVE is set here, before torch is first imported, unless the user set it: with
OpenMP's default (spin ~300,000 times before sleeping) a busy second process on the same cores made
every epoch up to 14x slower. `import sparsefw` imports nothing heavy, so this module runs first.
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")   # before the imports below, which load torch

import argparse
import json
import shlex
import sys
from pathlib import Path

from .experiments.checkpoint import CheckpointError
from .experiments.config import COMPRESSION_KINDS, ConfigError, packaged_configs, parse_override


def _fraction(text: str) -> float:
    """A number in (0, 1), else an argparse error (exit status 2)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1), got {text!r}") from None
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must lie in (0, 1) (fraction removed), got {text!r}")
    return value


def _batches(text: str) -> int:
    """A count of batches ≥ 0, else an argparse error (exit status 2)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of batches (an integer ≥ 0), got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be ≥ 0 (0 = no recalibration), got {text!r}")
    return value


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sparsefw", description="Compression-aware training with Stochastic Frank-Wolfe.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    overrides = dict(action="append", default=[], metavar="KEY=VALUE",
                     help="override a config value, dotted key, YAML value (repeatable)")

    t = sub.add_parser("train", help="train one config (every method it lists)",
                       description=f"Packaged configs (pass the bare name): {', '.join(packaged_configs())}.")
    t.add_argument("--config", help="YAML file or packaged config name")
    t.add_argument("--set", dest="overrides", **overrides)
    t.add_argument("--method", action="append", default=None, help="train only this method (repeatable)")
    t.add_argument("--out", help="run directory (default runs/<name>; a subdirectory per method)")
    t.add_argument("--resume", action="store_true", help="continue runs from their checkpoints")
    t.add_argument("--fsdp", action="store_true", help="with --nproc-per-node N > 1 (or under torchrun): shard "
                   "the model with FSDP2 instead of DDP (= --set training.fsdp=true; gloo on CPU, NCCL on CUDA)")
    t.add_argument("--nproc-per-node", type=_processes, default=1, metavar="N",
                   help="data-parallel training on N processes of this machine (as torchrun does; default 1)")

    s = sub.add_parser("sweep", help="compress a trained run at every level, evaluate, write sweep.{csv,json,png}")
    s.add_argument("--run", action="append", required=True, help="run directory or checkpoint file (repeatable)")
    s.add_argument("--set", dest="overrides", **overrides)
    s.add_argument("--out", help="output directory (default: next to the checkpoint)")
    s.add_argument("--device", default="cpu")

    c = sub.add_parser("compress", help="compress a trained run once and save the result")
    c.add_argument("--run", required=True, help="run directory or checkpoint file")
    c.add_argument("--kind", required=True, choices=COMPRESSION_KINDS,
                   help="unstructured pruning, filters removed per conv, channels removed from every coupled "
                        "channel space (residual streams too), or low rank")
    c.add_argument("--level", required=True, type=_fraction,
                   help="fraction removed (sparsity, filters, channels, rank)")
    c.add_argument("--bn-recalibration", type=_batches, default=None, metavar="BATCHES",
                   help="re-estimate BatchNorm statistics on this many training batches (default: the run's "
                        "sweep.bn_recalibration, 0 = none)")
    c.add_argument("--out", help="output directory (default RUN/compressed/KIND_LEVEL)")
    c.add_argument("--device", default="cpu")

    r = sub.add_parser("report", help="merge sweeps into a markdown table and a plot")
    r.add_argument("runs", nargs="+", metavar="RUN_DIR")
    r.add_argument("--out", required=True)

    d = sub.add_parser("demo", help="SparseFW vs SGD on built-in MNIST digits, compressed at every level")
    d.add_argument("--out", default="runs/demo")
    d.add_argument("--set", dest="overrides", **overrides)
    d.add_argument("--resume", action="store_true",
                   help="continue the demo runs in --out with the settings they were started with")
    return p


def _processes(text: str) -> int:
    """A number of processes ≥ 1, else an argparse error (exit status 2)."""
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a number of processes (an integer ≥ 1), got {text!r}")
    return int(text)


class _Interrupted(Exception):
    """Ctrl-C, with the one line that says how to continue."""


def _train_argv(args, resume: bool) -> list[str]:
    """The `sparsefw train` arguments that repeat this command (with --resume if asked)."""
    argv = ["train"] + (["--config", args.config] if args.config else [])
    argv += [a for o in args.overrides for a in ("--set", o)] + [a for m in args.method or [] for a in ("--method", m)]
    argv += (["--out", args.out] if args.out else []) + (["--resume"] if resume or args.resume else [])
    return argv + ([f"--nproc-per-node={args.nproc_per_node}"] if args.nproc_per_node > 1 else [])


def _train(args) -> None:
    if args.fsdp and "training.fsdp=true" not in args.overrides:
        args.overrides = [*args.overrides, "training.fsdp=true"]
    if args.nproc_per_node > 1 and "WORLD_SIZE" not in os.environ:
        return _launch(args)
    from .experiments.runs import plan_runs
    from .experiments.train import train

    plans = plan_runs(args.config, args.overrides, args.method, args.out, args.resume)
    try:
        for plan in plans:
            train(plan.config, plan.out_dir, resume=plan.resume)
            _say(f"run '{plan.config.name}' in {plan.out_dir}")
    except KeyboardInterrupt:
        raise _Interrupted(f"interrupted; {_last_checkpoint([p.out_dir for p in plans])}. Resume with: "
                           f"{shlex.join(['sparsefw', *_train_argv(args, resume=True)])}") from None


def _last_checkpoint(run_dirs: list[Path]) -> str:
    """Where the newest checkpoint of these runs is, and after how many epochs it was written."""
    from .experiments.checkpoint import checkpoint_path
    from .experiments.train import METRICS_JSON

    saved = [d for d in run_dirs if checkpoint_path(d).exists()]
    if not saved:
        return "no checkpoint was written yet"
    run = max(saved, key=lambda d: checkpoint_path(d).stat().st_mtime_ns)
    try:
        epochs = len(json.loads((run / METRICS_JSON).read_text())["epochs"])
    except (OSError, ValueError, KeyError):
        epochs = None
    return f"last checkpoint {checkpoint_path(run)}" + (f" (after epoch {epochs})" if epochs else "")


def _launch(args) -> int:
    """`--nproc-per-node N`: run this command in N processes through torch's elastic launcher (what
    torchrun does), each rank printing its own one-line errors; the launcher's report of a failed
    rank (a traceback and a table per rank) is replaced by the exit status of the first failure."""
    import logging
    import uuid

    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)
    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=args.nproc_per_node, run_id=str(uuid.uuid4()),
                          rdzv_backend="c10d", rdzv_endpoint="127.0.0.1:0", max_restarts=0, monitor_interval=0.1)
    try:
        elastic_launch(config, sys.executable)("-m", "sparsefw.cli", *_train_argv(args, resume=False))
    except ChildFailedError as e:
        rank, failure = e.get_first_failure()
        if failure.exitcode not in (2, 130):           # those ranks said what went wrong themselves
            print(f"sparsefw train: error: rank {rank} failed with exit status {failure.exitcode}", file=sys.stderr)
        return failure.exitcode if failure.exitcode > 0 else 1
    except (KeyboardInterrupt, SignalException):       # the ranks got the signal too and said how to resume
        return 130
    return 0


def _sweep_overrides(texts: list[str]) -> dict:
    values = {}
    for text in texts:
        path, value = parse_override(text)
        if path[0] != "sweep" or len(path) != 2:
            raise ConfigError(f"override {text!r}: sweep takes only sweep.KEY=VALUE overrides")
        values[path[1]] = value
    return values


def _sweep(args) -> None:
    from .experiments.report import markdown_table
    from .experiments.sweep import sweep_run

    overrides = _sweep_overrides(args.overrides)
    for run in args.run:
        out = Path(args.out) / Path(run).name if args.out and len(args.run) > 1 else args.out
        rows, files = sweep_run(run, out, overrides, args.device)
        metric = json.loads(files["json"].read_text())["metric"]
        print(markdown_table(rows, metric))
        _say(f"wrote {', '.join(str(f) for f in files.values())}")


def _compress(args) -> None:
    from .experiments.compression import compress_and_save

    summary, out = compress_and_save(args.run, args.kind, args.level, args.out, args.device,
                                     bn_recalibration=args.bn_recalibration)
    for key, value in summary.items():
        print(f"{key:>16}: {value:.4g}" if isinstance(value, float) else f"{key:>16}: {value}")
    _say(f"wrote {out}")


def _report(args) -> None:
    from .experiments.report import write_report

    table, files = write_report(args.runs, args.out)
    print(table)
    _say(f"wrote {', '.join(str(f) for f in files.values())}")


def _demo(args) -> None:
    from .experiments.demo import comparison_table, run_demo

    try:
        result = run_demo(args.out, args.overrides, resume=args.resume)
    except KeyboardInterrupt:
        again = ["sparsefw", "demo", "--out", args.out] + ([a for o in args.overrides for a in ("--set", o)]
                                                          if not args.resume else ["--resume"])
        raise _Interrupted(f"interrupted; the runs in {args.out} continue from their last checkpoints with: "
                           f"{shlex.join(again)}") from None
    print(f"\nEvery run at every level, {result['data']}, one-shot compression, no retraining:\n")
    print(result["table"])
    print("\nEach SparseFW mode beside SGD at the compression it was trained for:")
    for comparison, sentence in zip(result["comparisons"], result["sentences"]):
        print(f"\n{comparison_table(comparison)}\n\n{sentence}")
    print(f"\nDemo took {result['seconds']:.0f} s. Tables, plots, CSV and JSON: "
          f"{', '.join(str(f) for f in result['files'].values())}; runs in {', '.join(map(str, result['runs']))}")


def _say(text: str) -> None:
    if os.environ.get("RANK", "0") == "0":
        print(text, file=sys.stderr)


COMMANDS = {"train": _train, "sweep": _sweep, "compress": _compress, "report": _report, "demo": _demo}


def main(argv: list[str] | None = None) -> int:
    """Run one command; exit status 0, 2 (bad input), 130 (Ctrl-C) or 1 (a data-parallel failure).

    Under torchrun, errors every rank meets alike (bad input) are printed by rank 0 only; a failed
    collective (a rank that died, a timeout) gives one line per rank, not a traceback."""
    args = _parser().parse_args(argv)
    rank = os.environ.get("RANK", "0")
    try:
        return COMMANDS[args.command](args) or 0
    except (ConfigError, CheckpointError, FileNotFoundError) as e:
        if rank == "0":
            print(f"sparsefw {args.command}: error: {e}", file=sys.stderr)
        return 2
    except (_Interrupted, KeyboardInterrupt) as e:
        if rank == "0":
            print(f"sparsefw {args.command}: {str(e) or 'interrupted'}", file=sys.stderr)
        return 130
    except RuntimeError as e:
        if not _from_the_process_group(e):
            raise
        print(f"sparsefw {args.command}: error (rank {rank}): {type(e).__name__}: {str(e).strip().splitlines()[0]}",
              file=sys.stderr)
        return 1


def _from_the_process_group(error: RuntimeError) -> bool:
    """A failed rendezvous or collective (torch's DistError; gloo raises plain RuntimeErrors)."""
    import torch.distributed

    return (int(os.environ.get("WORLD_SIZE", "1")) > 1
            and (isinstance(error, torch.distributed.DistError) or "gloo" in str(error) or "NCCL" in str(error)))


if __name__ == "__main__":
    sys.exit(main())
