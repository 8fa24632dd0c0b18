"""Sharded data-parallel training with FSDP2 (`sparsefw train --fsdp`, config `training.fsdp`).

Under torchrun every module that owns parameters is `fully_shard`-ed (then the root) on a 1-D mesh
of all ranks (gloo on CPU, NCCL on CUDA): each rank keeps 1/world of every parameter, gradient and
momentum buffer (docs/distributed.md). The optimizer is built on the plain model first (so that
`constrain`'s channel analyses see ordinary modules) and its param groups are then pointed at the
sharded parameters of the same names. `sparsefw.SFW` steps them exactly (`optim.sharded`).

Mixed precision: `training.fsdp_param_dtype` ("bfloat16"/"float16": forward and backward in that
dtype, FSDP2's `MixedPrecisionPolicy`) and `training.fsdp_reduce_dtype` (the gradient reduction's
dtype); the sharded master weights and the optimizer stay in float32. `training.amp` (autocast and
GradScaler) is not used under FSDP2.

Checkpoints hold the full (unsharded) model state dict, as without FSDP, and the optimizer's full
state dict keyed by parameter name (`torch.distributed.checkpoint.state_dict`); every rank takes
part in forming them and rank 0 writes. Evaluation runs on unsharded parameters (each rank its own
test shard, any number of batches), which for that time costs the memory of the whole model.
"""
from __future__ import annotations

import contextlib

import torch
from torch import nn
from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict,
                                                     get_optimizer_state_dict, set_model_state_dict,
                                                     set_optimizer_state_dict)
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard

DTYPES = {None: None, "float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
_FULL = StateDictOptions(full_state_dict=True, cpu_offload=True)


def policy(param_dtype: str | None, reduce_dtype: str | None) -> MixedPrecisionPolicy:
    """FSDP2's mixed-precision policy from the config's dtype names (None: the parameters' dtype)."""
    for name, value in (("fsdp_param_dtype", param_dtype), ("fsdp_reduce_dtype", reduce_dtype)):
        if value not in DTYPES:
            raise ValueError(f"{name} must be one of {sorted(k for k in DTYPES if k)} or null, got {name}={value!r}")
    return MixedPrecisionPolicy(param_dtype=DTYPES[param_dtype], reduce_dtype=DTYPES[reduce_dtype])


def shard_model(model: nn.Module, optimizer: torch.optim.Optimizer, device: torch.device, world: int,
                mp_policy: MixedPrecisionPolicy | None = None) -> nn.Module:
    """`fully_shard` every module owning parameters, then the root; the optimizer's param groups
    then hold the sharded parameters (matched by name). Call on every rank, with no optimizer state."""
    names = {id(p): n for n, p in model.named_parameters()}
    mesh = init_device_mesh(device.type, (world,))
    kw = {"mesh": mesh} if mp_policy is None else {"mesh": mesh, "mp_policy": mp_policy}
    for module in list(model.modules())[1:]:
        if any(True for _ in module.parameters(recurse=False)):
            fully_shard(module, **kw)
    fully_shard(model, **kw)
    params = dict(model.named_parameters())
    for group in optimizer.param_groups:
        group["params"] = [params[names[id(p)]] for p in group["params"]]
    return model


def _fsdp_modules(model: nn.Module) -> list[FSDPModule]:
    return [m for m in model.modules() if isinstance(m, FSDPModule)]


@contextlib.contextmanager
def unsharded(model: nn.Module):
    """Every FSDP module's parameters gathered for the block (no collective inside it: ranks may
    run different numbers of forwards, e.g. on unequal test shards), resharded after."""
    modules = _fsdp_modules(model)
    for m in modules:
        m.set_reshard_after_forward(False, recurse=False)
        m.unshard()
    try:
        yield model
    finally:
        for m in modules:
            m.reshard()
            m.set_reshard_after_forward(True, recurse=False)


def full_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> tuple[dict, dict]:
    """(model, optimizer) full state dicts on the CPU (rank 0; empty elsewhere). Every rank calls it."""
    return (get_model_state_dict(model, options=_FULL),
            get_optimizer_state_dict(model, optimizer, options=_FULL))


def load_full_state(model: nn.Module, optimizer: torch.optim.Optimizer, model_state: dict,
                    optimizer_state: dict) -> None:
    """Inverse of `full_state`, every rank holding the full state dicts (each keeps its shards)."""
    options = StateDictOptions(full_state_dict=True)
    set_model_state_dict(model, model_state, options=options)
    set_optimizer_state_dict(model, optimizer, optimizer_state, options=options)
