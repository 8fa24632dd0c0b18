"""Data-parallel training under torchrun: process-group set-up, sums across ranks, a parameter digest.

torchrun sets WORLD_SIZE, RANK and LOCAL_RANK; with WORLD_SIZE > 1 we join the process group (gloo on
CPU, nccl on CUDA). Everything else runs unchanged on a single process.

Every collective (and the rendezvous) fails after SPARSEFW_DIST_TIMEOUT seconds (default 60) instead
of torch's 30 minutes (10 for nccl): a rank that died or hangs makes the others fail within a
minute with a torch.distributed.DistError, not wait for half an hour.
"""
from __future__ import annotations

import datetime
import faulthandler
import gc
import hashlib
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def env_info() -> DistInfo:
    """Rank and world size as torchrun sets them (one process when unset)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistInfo()
    return DistInfo(int(os.environ["RANK"]), world_size, int(os.environ.get("LOCAL_RANK", "0")))


TIMEOUT_ENV, DEFAULT_TIMEOUT_S = "SPARSEFW_DIST_TIMEOUT", 60.0


def timeout() -> datetime.timedelta:
    """How long a collective may wait for the other ranks: SPARSEFW_DIST_TIMEOUT seconds (default 60)."""
    text = os.environ.get(TIMEOUT_ENV, str(DEFAULT_TIMEOUT_S))
    try:
        seconds = float(text)
    except ValueError:
        seconds = float("nan")
    if not 0 < seconds < float("inf"):
        raise ValueError(f"{TIMEOUT_ENV} must be a positive number of seconds, got {TIMEOUT_ENV}={text!r}")
    return datetime.timedelta(seconds=seconds)


def init(info: DistInfo, device: torch.device) -> None:
    """Join the process group (gloo on CPU, nccl on CUDA) when there is more than one process;
    the rendezvous and every collective time out after `timeout()`."""
    if info.enabled and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=timeout())


def teardown(info: DistInfo) -> None:
    """Leave the process group: all ranks meet at a barrier, then the group is destroyed.

    Call it only after every DistributedDataParallel wrapper is gone. A DDP reducer that holds the
    last reference to a gloo group destroys it while holding the GIL; the destructor joins gloo's
    worker threads, which may still be freeing the tensors of the last collective and need the GIL:
    a deadlock (seen about once in 20 two-rank runs, caught with py-spy). Destroyed from here, the
    group's Python binding releases the GIL first. Garbage cycles are collected so that no reducer
    survives in one.

    Should leaving still hang (a deadlock inside a destructor, which no collective timeout ends),
    every thread's Python stack is printed and the process exits with status 1 after `timeout()`."""
    if info.enabled and dist.is_initialized():
        faulthandler.dump_traceback_later(timeout().total_seconds(), exit=True)
        try:
            gc.collect()
            dist.barrier()
            dist.destroy_process_group()
        finally:
            faulthandler.cancel_dump_traceback_later()


def all_reduce_sum(values: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Elementwise sum over ranks (identity on one process)."""
    if info.enabled:
        values = values.clone()
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


def parameter_digest(module: torch.nn.Module) -> str:
    """SHA-256 over the bytes of every parameter and buffer, in state-dict order: equal iff bitwise equal."""
    h = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def gather_digests(module: torch.nn.Module, info: DistInfo) -> list[str]:
    """Every rank's parameter digest (a one-element list on one process)."""
    digest = parameter_digest(module)
    if not info.enabled:
        return [digest]
    out: list[str | None] = [None] * info.world_size
    dist.all_gather_object(out, digest)
    return [str(d) for d in out]
