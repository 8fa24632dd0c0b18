"""The ranks of tests/optim/test_fsdp.py (run under torchrun, 2 CPU ranks over gloo).

Every case trains a tiny model under FSDP2 (`fully_shard`) with `sparsefw.SFW` and, on every rank,
the same model as one plain process on the same global batches (the independent truth); it writes
{case: largest |θ_fsdp − θ_single|} (and facts the test asserts) to the JSON file argv[1] (rank 0).
"""
from __future__ import annotations

import copy
import json
import os
import sys
import warnings

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
from torch.distributed.fsdp.sharded_grad_scaler import ShardedGradScaler
from torch.distributed.tensor import Replicate, Shard, distribute_tensor

import sparsefw
from sparsefw.constraints import (KSupportBall, L1Ball, L2Ball, LinfBall, LpBall, NuclearBall, SpectralBall,
                                  SpectralKSupportBall, SpectralPolytope)
from sparsefw.optim.sharded import rebind, traffic

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "compress"))
from transformer_zoo import build  # noqa: E402

MODES = ("k_support", "k_sparse", "l2", "group_k_support", "spectral_k_support", "nuclear")
STEPS = 3


class Net(nn.Module):
    """Uneven shards everywhere (5, 3, 48 rows over 2 ranks), an empty one (head: 1 row) and one
    tensor over the native k-support threshold (fc1: 48 × 108 = 5184 entries)."""

    def __init__(self):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(2, 5, 3), nn.Conv2d(5, 3, 3)
        self.fc1, self.head = nn.Linear(108, 48), nn.Linear(48, 1)

    def forward(self, x):
        x = torch.relu(self.conv2(torch.relu(self.conv1(x))))
        return self.head(torch.relu(self.fc1(x.flatten(1))))


def shard(model: nn.Module, mesh, **kw) -> nn.Module:
    for child in model.children():
        fully_shard(child, mesh=mesh, **kw)
    return fully_shard(model, mesh=mesh, **kw)


def batches(dtype, steps=STEPS):
    g = torch.Generator().manual_seed(1)
    return [(torch.randn(8, 2, 10, 10, generator=g, dtype=dtype), torch.randn(8, 1, generator=g, dtype=dtype))
            for _ in range(steps)]


def train_pair(ref, fsdp, opt_ref, opt_fsdp, data, rank):
    """The same steps on the single process (global batch) and on FSDP2 (this rank's half)."""
    for x, y in data:
        for model, opt, (xb, yb) in ((ref, opt_ref, (x, y)), (fsdp, opt_fsdp, (x[4 * rank:4 * rank + 4],
                                                                              y[4 * rank:4 * rank + 4]))):
            opt.zero_grad()
            nn.functional.mse_loss(model(xb), yb).backward()
            opt.step()


def error(ref: nn.Module, fsdp: nn.Module) -> float:
    full = {n: p.detach().full_tensor() for n, p in fsdp.named_parameters()}
    return max(float((full[n] - p).abs().max()) for n, p in ref.named_parameters())


def models(dtype, mesh, **kw):
    torch.manual_seed(0)
    ref = Net().to(dtype)
    return ref, shard(copy.deepcopy(ref), mesh, **kw)


def case_mode(mode, strategy, dtype, mesh, rank):
    """`constrain` on the sharded model (width 0.5: most tensors are scaled onto their regions on
    the local shards) against `constrain` on the plain one, then STEPS steps."""
    ref, fsdp = models(dtype, mesh)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        g_ref = sparsefw.constrain(ref, mode, width=0.5, fixed_step="optimizer")
        g_fsdp = sparsefw.constrain(fsdp, mode, width=0.5, fixed_step="optimizer")
    radii = max(abs(a["constraint"].radius - b["constraint"].radius) for a, b in zip(g_ref, g_fsdp))
    start = error(ref, fsdp)
    opt_ref = sparsefw.SFW(g_ref, lr=0.1, momentum=0.9)
    opt = sparsefw.SFW(g_fsdp, lr=0.1, momentum=0.9, distributed_lmo=strategy)
    train_pair(ref, fsdp, opt_ref, opt, batches(dtype), rank)
    gaps = max(abs(a - b) for a, b in zip(opt_ref.fw_gaps(), opt.fw_gaps()) if a == a)
    return {"error": error(ref, fsdp), "start": start, "radii": radii, "gaps": gaps,
            "kernels": kernels(opt),
            "bytes": traffic(opt)[0]}


def case_other_regions(strategy, dtype, mesh, rank, refresh=None):
    """L1, L∞, Lp and spectral regions built by hand (radius: twice the start's gauge); plain
    SGD-with-momentum for the biases."""
    ref, fsdp = models(dtype, mesh)
    kinds = {"conv1.weight": lambda s: L1Ball(s, radius=1.0), "conv2.weight": lambda s: LinfBall(s, radius=1.0),
             "fc1.weight": lambda s: LpBall(s, p=1.5, radius=1.0), "head.weight": lambda s: NuclearBall(s, radius=1.0)}
    if refresh:
        kinds["conv2.weight"] = lambda s: SpectralKSupportBall(s, k=2, radius=1.0)

    def groups(model):
        out = []
        for name, p in model.named_parameters():
            if name in kinds:
                region = kinds[name](p.shape)
                value = p.full_tensor() if hasattr(p, "full_tensor") else p
                region.radius = 2 * float(region.norm(value.detach()))
                out.append({"params": [p], "constraint": region, "name": name})
            else:
                out.append({"params": [p], "name": name})
        return out
    opt_ref = sparsefw.SFW(groups(ref), lr=0.05, momentum=0.9, spectral_refresh=refresh)
    opt = sparsefw.SFW(groups(fsdp), lr=0.05, momentum=0.9, spectral_refresh=refresh, distributed_lmo=strategy)
    train_pair(ref, fsdp, opt_ref, opt, batches(dtype), rank)
    return {"error": error(ref, fsdp)}


def case_coupled(dtype, mesh, rank):
    """Coupled channel groups: `constrain` on the plain model, `fully_shard`, `rebind`."""
    torch.manual_seed(0)
    ref = Net().to(dtype)
    model = copy.deepcopy(ref)
    x = torch.randn(2, 2, 10, 10, dtype=dtype)
    kw = dict(k=0.5, width=0.5, example_inputs=x)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        g_ref = sparsefw.constrain(ref, "coupled_group_k_support", **kw)
        g_model = sparsefw.constrain(model, "coupled_group_k_support", **kw)
    shard(model, mesh)
    opt_ref = sparsefw.SFW(g_ref, lr=0.1, momentum=0.9)
    opt = sparsefw.SFW(rebind(g_model, model), lr=0.1, momentum=0.9)
    train_pair(ref, model, opt_ref, opt, batches(dtype), rank)
    return {"error": error(ref, model), "joint": sum(len(g["params"]) > 1 for g in g_ref)}


def kernels(opt) -> list[str]:
    """The LMO kernels of `opt`'s planned regions, sorted."""
    return sorted({r.kernel for p in opt._plans.values() for r in p[0].regions})


def direct(shape, region, grads, mesh, strategy, dtype, direction="momentum", masked=False):
    """SFW on one parameter, sharded and not, stepped with the given global gradients (`masked`:
    both mask a non-finite step on the device, as on CUDA, instead of reading a flag)."""
    torch.manual_seed(3)
    w = torch.randn(shape, dtype=dtype)
    w = region.shift_inside(w).clone()
    plain, sharded = nn.Parameter(w.clone()), nn.Parameter(distribute_tensor(w.clone(), mesh, [Shard(0)]))
    opts = [sparsefw.SFW([{"params": [p], "constraint": region}], lr=0.2, momentum=0.5, distributed_lmo=strategy,
                         direction=direction) for p in (plain, sharded)]
    for opt in opts:
        opt._mask_on_device = masked
    for g in grads:
        plain.grad = g.clone()
        sharded.grad = distribute_tensor(g.clone(), mesh, [Shard(0)])
        for opt in opts:
            opt.step()
    return plain, sharded, opts


def case_ties(strategy, dtype, mesh):
    """Tie-heavy top-k: gradients on 3 levels, k = 37 of 120 (the k-th value tied across ranks)."""
    g = torch.Generator().manual_seed(5)
    grads = [torch.randint(-1, 2, (15, 8), generator=g).to(dtype) for _ in range(3)]
    plain, sharded, _ = direct((15, 8), KSupportBall((15, 8), k=37, radius=2.0), grads, mesh, strategy, dtype)
    return {"error": float((sharded.full_tensor() - plain).abs().max())}


def case_tall_spectral(strategy, dtype, mesh):
    """Spectral k-support (40 × 6) and nuclear (33 × 5: uneven shards) balls on tall matrices, where
    "native" all-reduces the column Gram; the kernel used is reported."""
    g = torch.Generator().manual_seed(8)
    errors, used = [], set()
    for shape, region in (((40, 6), SpectralKSupportBall((40, 6), k=2, radius=2.0)),
                          ((33, 5), NuclearBall((33, 5), radius=2.0))):
        grads = [torch.randn(shape, generator=g, dtype=dtype) for _ in range(3)]
        plain, sharded, opts = direct(shape, region, grads, mesh, strategy, dtype)
        errors.append(float((sharded.full_tensor() - plain).abs().max()))
        used |= set(kernels(opts[1]))
    return {"error": max(errors), "kernels": sorted(used)}


def case_empty_shard(strategy, dtype, mesh):
    """A (1, 9) tensor: rank 1's shard is empty."""
    g = torch.Generator().manual_seed(6)
    grads = [torch.randn(1, 9, generator=g, dtype=dtype) for _ in range(3)]
    plain, sharded, _ = direct((1, 9), KSupportBall((1, 9), k=4, radius=2.0), grads, mesh, strategy, dtype)
    sizes = [None] * dist.get_world_size()
    dist.all_gather_object(sizes, sharded.to_local().numel())
    return {"error": float((sharded.full_tensor() - plain).abs().max()), "local": sizes}


ADAM_REGIONS = {"l2": lambda s: L2Ball(s, radius=2.0), "k_support": lambda s: KSupportBall(s, k=20, radius=2.0),
                "spectral_ball": lambda s: SpectralBall(s, radius=2.0),
                "spectral_polytope": lambda s: SpectralPolytope(s, k=3, radius=2.0)}


def case_adam(kind, strategy, dtype, mesh):
    """direction="adam" (AdaSFW) in a region of 15 × 8 (uneven shards: 8 + 7 rows) over 4 steps, the
    third with an inf on rank 1's rows (skipped alike: Adam's step count must stay one process's;
    under "native" both runs mask that step on the device, as on CUDA)."""
    g = torch.Generator().manual_seed(10)
    grads = [torch.randn(15, 8, generator=g, dtype=dtype) for _ in range(4)]
    grads[2][12, 3] = float("inf")
    region = ADAM_REGIONS[kind]((15, 8))
    plain, sharded, opts = direct((15, 8), region, grads, mesh, strategy, dtype, direction="adam",
                                  masked=strategy == "native")
    state = opts[1].state[sharded]
    return {"error": float((sharded.full_tensor() - plain).abs().max()),
            "moments": max(float((state[k].full_tensor() - opts[0].state[plain][k]).abs().max())
                           for k in ("exp_avg", "exp_avg_sq")),
            "steps": [float(opts[0].state[plain]["step"]), float(state["step"])],
            "skipped": [opts[0].nonfinite_steps, opts[1].nonfinite_steps],
            "kernels": kernels(opts[1])}


def transformer_pair(dtype, mesh):
    """The zoo's Llama (GQA, rotary, RMSNorm, no biases) with `constrain(model, "spectral_polytope",
    example_inputs=x)` groups (SpectralPolytope / SpectralBall with the fixed step and the Adam
    direction; L2 balls with Adam's rescaled step): the plain model and a copy constrained alike,
    then sharded per decoder layer and at the root (groups rebound by name)."""
    ref, x = build("llama", dtype=dtype)
    model = copy.deepcopy(ref)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        g_ref = sparsefw.constrain(ref, "spectral_polytope", example_inputs=x)
        g_model = sparsefw.constrain(model, "spectral_polytope", example_inputs=x)
    for layer in model.layers:
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return ref, model, g_ref, rebind(g_model, model)


def token_batches(steps=3):
    g = torch.Generator().manual_seed(11)
    return [(torch.randint(1, 50, (4, 8), generator=g), torch.randint(0, 50, (4, 8), generator=g))
            for _ in range(steps)]


def train_tokens(pairs, data):
    """Cross-entropy steps of (model, optimizer, rows) pairs on the global token batches."""
    for x, y in data:
        for model, opt, rows in pairs:
            opt.zero_grad()
            logits = model(x[rows])
            nn.functional.cross_entropy(logits.flatten(0, 1), y[rows].flatten()).backward()
            opt.step()


def case_transformer(strategy, dtype, mesh, rank):
    """`transformer_pair` stepped 3 times on the same global batches (2 sequences per rank)."""
    ref, model, g_ref, g_model = transformer_pair(dtype, mesh)
    opt_ref, opt = sparsefw.SFW(g_ref), sparsefw.SFW(g_model, distributed_lmo=strategy)
    start = error(ref, model)
    train_tokens([(ref, opt_ref, slice(None)), (model, opt, slice(2 * rank, 2 * rank + 2))], token_batches())
    directions = sorted({g.get("direction", "momentum") for g in g_ref})
    regions = sorted({type(g["constraint"]).__name__ for g in g_ref if g.get("constraint") is not None})
    return {"error": error(ref, model), "start": start, "directions": directions, "regions": regions,
            "kernels": kernels(opt)}


def case_inf(dtype, mesh):
    """An inf in rank 1's rows only: both ranks skip the step (and count it), then go on."""
    g = torch.Generator().manual_seed(7)
    grads = [torch.randn(15, 8, generator=g, dtype=dtype) for _ in range(3)]
    grads[1][12, 3] = float("inf")          # row 12: rank 1's shard (rows 8..14)
    plain, sharded, opts = direct((15, 8), KSupportBall((15, 8), k=20, radius=2.0), grads, mesh, "native", dtype)
    return {"error": float((sharded.full_tensor() - plain).abs().max()),
            "skipped": [opts[0].nonfinite_steps, opts[1].nonfinite_steps]}


class NanVertexBall(L1Ball):
    """An L1 ball whose LMO returns nan (the last line of defence: the step must not move θ)."""

    def _flat_lmo_rows(self, rows, radii):
        return torch.full_like(rows, float("nan"))


def case_nan_vertex(dtype, mesh):
    """A non-finite vertex: neither run moves θ, both count every step (the momentum moves)."""
    g = torch.Generator().manual_seed(9)
    grads = [torch.randn(15, 8, generator=g, dtype=dtype) for _ in range(2)]
    plain, sharded, opts = direct((15, 8), NanVertexBall((15, 8), radius=2.0), grads, mesh, "auto", dtype)
    return {"error": float((sharded.full_tensor() - plain).abs().max()),
            "skipped": [opts[0].nonfinite_steps, opts[1].nonfinite_steps]}


def case_mixed_precision(mesh, rank):
    """MixedPrecisionPolicy(param bf16, reduce float32): the single process runs each half batch on
    a bfloat16 copy, averages the float32 gradients and steps its float32 master weights."""
    torch.manual_seed(0)
    ref = Net()
    fsdp = shard(copy.deepcopy(ref), mesh, mp_policy=MixedPrecisionPolicy(param_dtype=torch.bfloat16,
                                                                          reduce_dtype=torch.float32))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        opt_ref = sparsefw.SFW(sparsefw.constrain(ref, "k_support", width=0.5, fixed_step="optimizer"), lr=0.1)
        opt = sparsefw.SFW(sparsefw.constrain(fsdp, "k_support", width=0.5, fixed_step="optimizer"), lr=0.1)
    for x, y in batches(torch.float32):
        grads = []
        for r in range(2):
            half = copy.deepcopy(ref).to(torch.bfloat16)
            nn.functional.mse_loss(half(x[4 * r:4 * r + 4].bfloat16()).float(), y[4 * r:4 * r + 4]).backward()
            grads.append([p.grad.float() for p in half.parameters()])
        for p, a, b in zip(ref.parameters(), *grads):
            p.grad = (a + b) / 2
        opt_ref.step()
        opt.zero_grad()
        nn.functional.mse_loss(fsdp(x[4 * rank:4 * rank + 4]).float(), y[4 * rank:4 * rank + 4]).backward()
        opt.step()
    return {"error": error(ref, fsdp)}


def case_grad_scaler(kind, mesh, rank):
    """GradScaler (init 2¹⁰, growth every 2 steps) on both runs, float32, k-support regions; step 2
    has an inf in fc1.weight row 30 (rank 1's shard only): both skip it and back off alike. `kind`:
    "amp" (torch.amp.GradScaler, scaler.step hands SFW grad_scale and found_inf: SFW unscales
    each shard), "amp_unscale" (scaler.unscale_ first), "sharded_unscale" (FSDP's ShardedGradScaler)."""
    ref, fsdp = models(torch.float32, mesh)
    opts = [k_support_sfw(model) for model in (ref, fsdp)]
    make = ShardedGradScaler if kind.startswith("sharded") else torch.amp.GradScaler
    scalers = [torch.amp.GradScaler("cpu", init_scale=2.0 ** 10, growth_interval=2),
               make("cpu", init_scale=2.0 ** 10, growth_interval=2)]
    scales = [[], []]
    for step, (x, y) in enumerate(batches(torch.float32, 4)):
        for j, (model, opt, scaler, rows) in enumerate(zip((ref, fsdp), opts, scalers,
                                                           (slice(None), slice(4 * rank, 4 * rank + 4)))):
            opt.zero_grad()
            scaler.scale(nn.functional.mse_loss(model(x[rows]), y[rows])).backward()
            if step == 2 and (j == 0 or rank == 1):
                grad = model.fc1.weight.grad
                (grad if j == 0 else grad.to_local()[-24:])[30 - 24 * j, 0] = float("inf")
            if kind.endswith("unscale"):
                scaler.unscale_(opt)
            scaler.step(opt)
            scaler.update()
            scales[j].append(float(scaler.get_scale()))
    ranks = [None] * dist.get_world_size()
    dist.all_gather_object(ranks, scales[1])
    return {"error": error(ref, fsdp), "scales": [scales[0]] + ranks, "skipped": [o.nonfinite_steps for o in opts]}


def case_local_found_inf(mesh, rank):
    """GradScaler's protocol by hand (grad_scale 4, gradients ×4) with `found_inf` set on rank 1
    only at step 1, as a scaler whose check is per rank would hand it: both ranks skip (the flag is
    all-reduced), as one process with the flag set; the other steps unscale each shard."""
    g = torch.Generator().manual_seed(12)
    grads = [4 * torch.randn(15, 8, generator=g) for _ in range(3)]
    plain, sharded, opts = direct((15, 8), KSupportBall((15, 8), k=20, radius=2.0), [], mesh, "auto", torch.float32)
    for step, grad in enumerate(grads):
        plain.grad, sharded.grad = grad.clone(), distribute_tensor(grad.clone(), mesh, [Shard(0)])
        for opt, flag in ((opts[0], step == 1), (opts[1], step == 1 and rank == 1)):
            opt.grad_scale, opt.found_inf = torch.tensor(4.0), torch.tensor(float(flag))
            opt.step()
            del opt.grad_scale, opt.found_inf
    return {"error": float((sharded.full_tensor() - plain).abs().max())}


def k_support_sfw(model: nn.Module, direction: str = "momentum"):
    """`constrain(model, "k_support")` groups (every group given `direction`) and their SFW."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        groups = sparsefw.constrain(model, "k_support", width=0.5, fixed_step="optimizer")
    return sparsefw.SFW([{**g, "direction": direction} for g in groups], lr=0.1, momentum=0.9)


#: the state-dict case's steps: 3 before the checkpoint (the second with an inf: skipped), 2 after
CHECKPOINT_STEPS, CHECKPOINT_AT, CHECKPOINT_INF = 5, 3, 1


def case_state_dict(mesh, rank, folder: str, direction: str = "momentum"):
    """`torch.distributed.checkpoint` of model and optimizer after 3 steps (one skipped: an inf in
    rank 1's rows); a fresh pair loads it, keeps `nonfinite_steps`, and its next 2 steps are bitwise
    those of the uninterrupted run, whose parameters are saved (whole) for the test to resume the
    checkpoint on one process. `optimizer.state_dict()` also loads with weights_only=True."""
    def make():
        torch.manual_seed(0)
        model = shard(Net().double(), mesh)
        return model, k_support_sfw(model, direction)

    def steps(model, opt, data, bad=None):
        for i, (x, y) in enumerate(data):
            opt.zero_grad()
            nn.functional.mse_loss(model(x[4 * rank:4 * rank + 4]), y[4 * rank:4 * rank + 4]).backward()
            if i == bad and rank == 1:
                model.fc1.weight.grad.to_local()[0, 0] = float("inf")
            opt.step()
    tag = "" if direction == "momentum" else f"_{direction}"
    data = batches(torch.float64, CHECKPOINT_STEPS)
    model, opt = make()
    steps(model, opt, data[:CHECKPOINT_AT], bad=CHECKPOINT_INF)
    dcp.save(dict(zip(("model", "optim"), get_state_dict(model, opt))), checkpoint_id=f"{folder}/ckpt{tag}")
    torch.save(opt.state_dict(), f"{folder}/optim{tag}{rank}.pt")
    loaded = torch.load(f"{folder}/optim{tag}{rank}.pt", weights_only=True)
    steps(model, opt, data[CHECKPOINT_AT:])
    after = {n: p.detach().full_tensor() for n, p in model.named_parameters()}
    again, opt2 = make()
    state = dict(zip(("model", "optim"), get_state_dict(again, opt2)))
    dcp.load(state, checkpoint_id=f"{folder}/ckpt{tag}")
    set_state_dict(again, opt2, model_state_dict=state["model"], optim_state_dict=state["optim"])
    resumed = opt2.nonfinite_steps
    steps(again, opt2, data[CHECKPOINT_AT:])
    if rank == 0:
        torch.save(after, f"{folder}/after{tag}.pt")
    first = loaded["state"][0]
    return {"bitwise": all(torch.equal(p.full_tensor(), after[n]) for n, p in again.named_parameters()),
            "weights_only": type(first["exp_avg" if direction == "adam" else "momentum_buffer"]).__name__,
            "nonfinite_steps": [opt.nonfinite_steps, resumed, opt2.nonfinite_steps],
            "state_keys": sorted(first)}


def case_placement(mesh):
    """A DTensor replicated instead of sharded on dim 0: the step raises a ValueError naming it."""
    w = nn.Parameter(distribute_tensor(torch.zeros(4, 3), mesh, [Replicate()]))
    opt = sparsefw.SFW([{"params": [w], "constraint": L2Ball((4, 3), radius=1.0), "name": "w"}])
    w.grad = distribute_tensor(torch.ones(4, 3), mesh, [Replicate()])
    try:
        opt.step()
    except ValueError as exc:
        return {"message": str(exc)}
    return {"message": None}


def main(out: str, only: str | None = None) -> None:
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    mesh = init_device_mesh("cpu", (dist.get_world_size(),))
    results = {}
    try:
        for dtype, name in ((torch.float64, "float64"), (torch.float32, "float32")):
            for strategy in ("gather", "native", "auto"):
                for mode in MODES:
                    results[f"{mode}/{strategy}/{name}"] = case_mode(mode, strategy, dtype, mesh, rank)
                results[f"other/{strategy}/{name}"] = case_other_regions(strategy, dtype, mesh, rank)
                results[f"ties/{strategy}/{name}"] = case_ties(strategy, dtype, mesh)
                results[f"empty/{strategy}/{name}"] = case_empty_shard(strategy, dtype, mesh)
                results[f"tall_spectral/{strategy}/{name}"] = case_tall_spectral(strategy, dtype, mesh)
            results[f"warm_spectral/gather/{name}"] = case_other_regions("gather", dtype, mesh, rank, refresh=2)
            results[f"coupled/gather/{name}"] = case_coupled(dtype, mesh, rank)
            results[f"inf/native/{name}"] = case_inf(dtype, mesh)
            results[f"nan_vertex/auto/{name}"] = case_nan_vertex(dtype, mesh)
            for strategy in ("gather", "native"):
                for kind in ADAM_REGIONS:
                    results[f"adam_{kind}/{strategy}/{name}"] = case_adam(kind, strategy, dtype, mesh)
            results[f"adam_transformer/auto/{name}"] = case_transformer("auto", dtype, mesh, rank)
        results["mixed_precision/auto/float32"] = case_mixed_precision(mesh, rank)
        for kind in ("amp", "amp_unscale", "sharded_unscale"):
            results[f"grad_scaler_{kind}/auto/float32"] = case_grad_scaler(kind, mesh, rank)
        results["grad_scaler_local_flag/auto/float32"] = case_local_found_inf(mesh, rank)
        results["state_dict"] = case_state_dict(mesh, rank, os.path.dirname(out))
        results["state_dict_adam"] = case_state_dict(mesh, rank, os.path.dirname(out), "adam")
        results["placement"] = case_placement(mesh)
    finally:
        if rank == 0:
            with open(out, "w") as f:
                json.dump(results, f, indent=1)
        dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], os.environ.get("FSDP_ONLY"))
