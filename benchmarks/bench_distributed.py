"""DDP against FSDP2 with SFW on two CPU ranks (gloo): per-rank memory, traffic and step time.

Run: PYTHONPATH=src python benchmarks/bench_distributed.py [--steps 3]
(writes the "distributed" section of BENCHMARKS.md; --quick: one step, prints only; each configuration
is one torchrun launch of 2 ranks of this file.)
Model, and how each column is measured: the section's text (sections/distributed.md).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import _harness as H

WIDTHS = (1024, 2048, 2048, 1280, 1024, 10)
CONFIGS = (("ddp", "auto"), ("fsdp", "gather"), ("fsdp", "native"), ("fsdp", "auto"))


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _peak(reset: bool = False) -> int:
    """The resident high-water mark (bytes); reset=True starts a new one afterwards."""
    with open("/proc/self/status") as f:
        peak = int(f.read().split("VmHWM:")[1].split()[0]) * 1024
    if reset:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    return peak


def _model():
    from torch import nn
    layers = [layer for a, b in zip(WIDTHS[:-1], WIDTHS[1:]) for layer in (nn.Linear(a, b), nn.ReLU())]
    return nn.Sequential(*layers[:-1])


def _count_fsdp_traffic(counter: dict, world: int) -> None:
    """Wrap FSDP2's default all-gather and reduce-scatter to add the bytes each rank receives."""
    from torch.distributed.fsdp._fully_shard import _fsdp_collectives as c
    gather, scatter = c.DefaultAllGather.__call__, c.DefaultReduceScatter.__call__

    def counted_gather(self, output_tensor, input_tensor, group, async_op=False):
        counter["fsdp"] += output_tensor.numel() * output_tensor.element_size() * (world - 1) // world
        return gather(self, output_tensor, input_tensor, group, async_op)

    def counted_scatter(self, output_tensor, input_tensor, group, op, async_op=False):
        counter["fsdp"] += input_tensor.numel() * input_tensor.element_size() * (world - 1) // world
        return scatter(self, output_tensor, input_tensor, group, op, async_op)
    c.DefaultAllGather.__call__, c.DefaultReduceScatter.__call__ = counted_gather, counted_scatter


def _build(kind: str, world: int):
    import torch
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard
    from torch.nn.parallel import DistributedDataParallel
    if kind == "ddp":
        model = _model()
        return model, DistributedDataParallel(model)
    mesh = init_device_mesh("cpu", (world,))
    with torch.device("meta"):
        model = _model()
    for layer in model:
        if hasattr(layer, "weight"):
            fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    model.to_empty(device="cpu")
    for layer in model:
        if hasattr(layer, "reset_parameters"):
            layer.reset_parameters()
    return model, model


def rank_job(kind: str, strategy: str, steps: int) -> dict:
    """One rank's measurements (module docstring)."""
    import torch
    import torch.distributed as dist

    import sparsefw
    from sparsefw.optim.sharded import local, traffic
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    counter = {"fsdp": 0}
    _count_fsdp_traffic(counter, world)
    start_rss = _rss()
    model, net = _build(kind, world)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        opt = sparsefw.SFW(sparsefw.constrain(model, "k_support", fixed_step="optimizer"), lr=0.05,
                           momentum=0.9, distributed_lmo=strategy)
    setup_peak = _peak(reset=True) - start_rss
    g = torch.Generator().manual_seed(rank)
    x, y = torch.randn(16, WIDTHS[0], generator=g), torch.randint(0, WIDTHS[-1], (16,), generator=g)
    times, step_times = [], []
    for i in range(steps + 1):
        if i == 1:
            sfw0, fsdp0 = traffic(opt)[0], counter["fsdp"]
        t0 = time.perf_counter()
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(x), y).backward()
        t1 = time.perf_counter()
        opt.step()
        t2 = time.perf_counter()
        if i:
            times.append(t2 - t0)
            step_times.append(t2 - t1)
    params = list(model.parameters())
    state = sum(local(t).numel() * local(t).element_size() for p in params
                for t in (p, p.grad, opt.state[p].get("momentum_buffer")) if t is not None)
    full = sum(p.numel() * p.element_size() for p in params)
    out = {"state": state, "peak": _peak() - start_rss, "setup": setup_peak,
           "sfw": (traffic(opt)[0] - sfw0) / steps, "calls": traffic(opt)[1] / (steps + 1),
           "fsdp": (counter["fsdp"] - fsdp0) / steps if kind == "fsdp" else 2 * (world - 1) * full / world,
           "time": sum(times) / steps, "step": sum(step_times) / steps, "params": full // 4,
           "kernels": sorted({r.kernel for p in opt._plans.values() for r in getattr(p[0], "regions", [])})}
    gathered = [None] * world
    dist.all_gather_object(gathered, out)
    dist.barrier()
    dist.destroy_process_group()
    return gathered


def _launch(kind: str, strategy: str, steps: int) -> list[dict]:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "r.json"
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MALLOC_MMAP_THRESHOLD_": "65536"}
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master-addr=127.0.0.1",
               "--master-port=29731", __file__, "--rank-job", kind, strategy, str(steps), str(out)]
        subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
        return json.loads(out.read_text())


def distributed(args) -> dict[str, str]:
    """Every configuration, one torchrun launch each; the rank with the higher peak per row."""
    args.steps = 1 if args.quick else args.steps
    if args.steps < 1:
        raise SystemExit(f"--steps must be ≥ 1, got {args.steps}")
    results = {config: _launch(*config, args.steps) for config in CONFIGS}
    rows, mib = [], 2 ** 20
    for (kind, strategy), ranks in results.items():
        r = max(ranks, key=lambda x: x["peak"])
        rows.append(["DDP" if kind == "ddp" else f"FSDP2, {strategy}", ", ".join(r["kernels"]),
                     *(f"{r[key] / mib:.1f}" for key in ("state", "peak", "setup")), f"{r['sfw'] / 1024:.1f} KiB",
                     f"{r['calls']:.0f}", f"{r['fsdp'] / mib:.1f} MiB", f"{100 * r['sfw'] / r['fsdp']:.2f} %",
                     f"{r['time']:.3f}", f"{r['step']:.3f}"])
    table = H.table(["run", "LMO kernels", "state per rank (MiB)", "training peak RSS − start (MiB)",
                     "set-up peak (MiB)", "SFW bytes/step", "SFW collectives/step", "FSDP/DDP bytes/step",
                     "SFW / FSDP traffic", "step (s)", "optimizer step (s)"], rows)
    params = next(iter(results.values()))[0]["params"]
    return {"distributed": H.section("distributed", steps=args.steps, mparams=params / 1e6, table=table,
                                     widths="-".join(map(str, WIDTHS)))}


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--rank-job":
        kind, strategy, steps, out = sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
        gathered = rank_job(kind, strategy, steps)
        if int(os.environ.get("RANK", "0")) == 0:
            Path(out).write_text(json.dumps(gathered))
    else:
        H.main("bench_distributed.py", __doc__, {"distributed": H.Variant(
            distributed, "DDP against FSDP2 with SFW (section distributed)",
            lambda parser: parser.add_argument("--steps", type=int, default=3))})
