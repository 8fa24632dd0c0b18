"""One torchrun worker: every SFW region, 50 DDP steps each, then the ranks compare parameter digests.

    torchrun --nproc_per_node=2 ddp_regions_worker.py      (gloo, CPU)

Each rank draws its own minibatches and, before every step, a rank-dependent amount of the global
random stream (as rank-local augmentation would): only the all-reduced gradients are shared, so the
ranks stay identical only if every LMO is a deterministic function of its input. Rank 0 prints one
JSON line per region: {"mode", "digests" (one per rank), "moved", "feasible", "gaps_equal",
"batches_differ" (the ranks really saw different data)}; a final
control line shows that a one-ulp difference on one rank changes its digest.
"""
import hashlib
import json

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

import sparsefw
from sparsefw.assign import MODES
from sparsefw.experiments.distributed import env_info, init, teardown

STEPS = 50


def digest(model: nn.Module) -> str:
    h = hashlib.sha256()
    for name, p in model.named_parameters():
        h.update(name.encode())
        h.update(p.detach().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def gathered(value):
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, value)
    return out


def _region_point(group: dict) -> torch.Tensor:
    """The point of a param group's region: its parameter, or its members packed (joint regions)."""
    params = [p.detach() for p in group["params"]]
    return group["constraint"].pack(params) if getattr(group["constraint"], "multi_tensor", False) else params[0]


def run_region(mode: str, rank: int) -> dict:
    torch.manual_seed(0)                                   # the same initial model on every rank
    model = nn.Sequential(nn.Conv2d(1, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 8, 3), nn.ReLU(),
                          nn.Flatten(), nn.Linear(8 * 4 * 4, 10))
    start = [p.detach().clone() for p in model.parameters()]
    example = torch.zeros(1, 1, 8, 8)                      # the coupled mode's channel analysis
    opt = sparsefw.SFW(sparsefw.constrain(model, mode, k=0.3, width=5.0, example_inputs=example), lr=0.1,
                       momentum=0.9)
    net = DistributedDataParallel(model)
    data = torch.Generator().manual_seed(1000 + rank)      # rank-local minibatches
    for step in range(STEPS):
        torch.rand(1 + rank + step % 3)                    # rank-dependent use of the global RNG
        x, y = torch.randn(16, 1, 8, 8, generator=data), torch.randint(0, 10, (16,), generator=data)
        opt.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    feasible = all(float(g["constraint"].norm(_region_point(g))) <= g["constraint"].radius * (1 + 1e-5)
                   for g in opt.param_groups)
    moved = any(not torch.equal(a, b) for a, b in zip(start, model.parameters()))
    gaps, batches = gathered(opt.fw_gaps()), gathered(x.sum().item())
    return {"mode": mode, "digests": gathered(digest(model)), "moved": moved, "feasible": feasible,
            "gaps_equal": all(g == gaps[0] for g in gaps), "batches_differ": len(set(batches)) == len(batches)}


def main() -> None:
    torch.set_num_threads(1)
    info = env_info()
    init(info, torch.device("cpu"))
    rank = info.rank
    for mode in MODES:
        result = run_region(mode, rank)
        if rank == 0:
            print(json.dumps(result), flush=True)
    control = nn.Linear(3, 2)
    with torch.no_grad():
        control.weight.zero_()
        control.bias.zero_()
        if rank == 1:
            control.weight[0, 0] = torch.nextafter(torch.tensor(0.0), torch.tensor(1.0))
    digests = gathered(digest(control))
    if rank == 0:
        print(json.dumps({"mode": "control", "digests": digests}), flush=True)
    teardown(info)


if __name__ == "__main__":
    main()
