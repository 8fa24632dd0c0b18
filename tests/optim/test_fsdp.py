"""SFW on FSDP2 parameters (DTensors sharded on dim 0) equals one process on the same global
batches: two CPU ranks over gloo run `fsdp_worker.py` under torchrun once (every region kind ×
strategy × dtype, uneven and empty shards, tie-heavy top-k, an inf on one rank, a mixed-precision
policy, a `torch.distributed.checkpoint` round trip) and report their largest deviations."""
import json
import os
import socket
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

import sparsefw
from sparsefw.constraints import GroupKSupportBall, KSupportBall, L2Ball, SpectralKSupportBall
from sparsefw.optim.sharded_lmo import Layout, cost

HERE = Path(__file__).resolve().parent
TOLERANCE = {"float64": 1e-12, "float32": 1e-5}
ADAM_REGIONS = ("l2", "k_support", "spectral_ball", "spectral_polytope")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fsdp")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master-addr=127.0.0.1",
           f"--master-port={_free_port()}", str(HERE / "fsdp_worker.py"), str(folder / "results.json")]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    return folder, json.loads((folder / "results.json").read_text())


def _cases(prefix: str = "") -> list[str]:
    modes = ("k_support", "k_sparse", "l2", "group_k_support", "spectral_k_support", "nuclear", "other", "ties",
             "empty", "tall_spectral")
    out = [f"{m}/{s}/{d}" for d in TOLERANCE for s in ("gather", "native", "auto") for m in modes]
    out += [f"{m}/{d}" for d in TOLERANCE for m in ("warm_spectral/gather", "coupled/gather", "inf/native",
                                                    "nan_vertex/auto")]
    out += [f"adam_{k}/{s}/{d}" for d in TOLERANCE for s in ("gather", "native") for k in ADAM_REGIONS]
    out += [f"adam_transformer/auto/{d}" for d in TOLERANCE]
    out += [f"grad_scaler_{k}/auto/float32" for k in ("amp", "amp_unscale", "sharded_unscale", "local_flag")]
    return out + ["mixed_precision/auto/float32"]


#: the Adam-direction and GradScaler cases, float32: measured ≤ 2.4e-7
NEW_FLOAT32 = 1e-6


@pytest.mark.parametrize("case", _cases())
def test_sharded_steps_equal_one_process(results, case):
    found = results[1][case]
    assert found["error"] <= TOLERANCE[case.rsplit("/", 1)[1]], found
    if case.startswith(("adam_", "grad_scaler_")):
        assert found["error"] <= min(NEW_FLOAT32, TOLERANCE[case.rsplit("/", 1)[1]]), found
    if "radii" in found:              # constrain on the sharded model: same radii, same scaled start
        assert found["radii"] == 0 and found["start"] == 0
        assert found["gaps"] <= 10 * TOLERANCE[case.rsplit("/", 1)[1]]


def test_native_strategy_uses_native_kernels(results):
    r = results[1]
    assert r["k_support/native/float64"]["kernels"] == ["topk"]
    assert r["group_k_support/native/float64"]["kernels"] == ["group", "l2"]
    assert r["spectral_k_support/native/float64"]["kernels"] == ["gather", "l2"]     # wide convs: gathered
    assert r["tall_spectral/native/float64"]["kernels"] == ["spectral"]           # tall: the column Gram
    assert r["tall_spectral/gather/float32"]["kernels"] == ["gather"]
    assert "topk" in r["k_support/auto/float64"]["kernels"]                        # fc1: 5184 entries
    assert r["l2/native/float64"]["bytes"] < r["l2/gather/float64"]["bytes"] / 50
    assert r["empty/native/float64"]["local"] == [9, 0]


@pytest.mark.parametrize("dtype", list(TOLERANCE))
def test_adam_direction_moments_and_step_counts_are_one_process(results, dtype):
    """direction="adam": the sharded moments equal one process's; the inf step is skipped by both
    ranks, so Adam's step count (its bias correction) is one process's: 3 of 4 steps."""
    r = results[1]
    for kind in ADAM_REGIONS:
        for strategy in ("gather", "native"):
            found = r[f"adam_{kind}/{strategy}/{dtype}"]
            assert found["moments"] <= TOLERANCE[dtype], (kind, strategy, found)
            assert found["steps"] == [3.0, 3.0] and found["skipped"] == [1, 1], (kind, strategy, found)
    assert r[f"adam_k_support/native/{dtype}"]["kernels"] == ["topk"]
    assert r[f"adam_l2/native/{dtype}"]["kernels"] == ["l2"]
    assert r[f"adam_spectral_polytope/native/{dtype}"]["kernels"] == ["gather"]     # no native kernel: gathered


@pytest.mark.parametrize("dtype", list(TOLERANCE))
def test_spectral_polytope_transformer_groups_step_as_one_process(results, dtype):
    """`constrain(llama, "spectral_polytope", example_inputs=x)`: every group's direction is Adam's,
    the regions are the mode's, and the sharded run starts and ends where one process does."""
    found = results[1][f"adam_transformer/auto/{dtype}"]
    assert found["directions"] == ["adam"]
    assert found["regions"] == ["L2Ball", "SpectralBall", "SpectralPolytope"]
    assert found["start"] == 0 and found["error"] <= TOLERANCE[dtype]
    assert "gather" in found["kernels"] and "l2" in found["kernels"]


@pytest.mark.parametrize("kind", ["amp", "amp_unscale", "sharded_unscale"])
def test_grad_scaler_skips_and_scales_alike_on_every_rank(results, kind):
    """GradScaler under FSDP2: the inf on one rank's shard backs the scale off on both ranks as on
    one process (1024 → 2048 → 1024), and the scaler's skip is not counted in `nonfinite_steps`."""
    found = results[1][f"grad_scaler_{kind}/auto/float32"]
    assert found["scales"] == [[1024.0, 2048.0, 1024.0, 1024.0]] * 3
    assert found["skipped"] == [0, 0]


def test_inf_on_one_rank_skips_on_both(results):
    for dtype in TOLERANCE:
        assert results[1][f"inf/native/{dtype}"]["skipped"] == [1, 1]


def test_non_finite_vertex_moves_nothing_and_is_counted(results):
    for dtype in TOLERANCE:
        assert results[1][f"nan_vertex/auto/{dtype}"]["skipped"] == [2, 2]


def test_non_shard0_placement_names_the_parameter(results):
    message = results[1]["placement"]["message"]
    assert message is not None and "'w'" in message and "Shard(0)" in message


@pytest.mark.parametrize("direction", ["momentum", "adam"])
def test_checkpoint_resumes_bitwise_and_on_one_process(results, direction):
    """DCP round trip on 2 ranks is bitwise (the momentum or Adam's moments, sharded, and
    `nonfinite_steps`, 1 from an inf before the checkpoint, carried); the same checkpoint resumed by
    a plain single process (world size 1) reaches the 2-rank run's parameters to float64
    tolerance."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    from fsdp_worker import CHECKPOINT_AT, CHECKPOINT_STEPS, Net, batches, k_support_sfw
    folder, found = results
    tag = "" if direction == "momentum" else f"_{direction}"
    found = found[f"state_dict{tag}"]
    assert found["bitwise"] and found["weights_only"] == "DTensor", found
    assert found["nonfinite_steps"] == [1, 1, 1]
    assert found["state_keys"] == (["exp_avg", "exp_avg_sq", "step"] if direction == "adam" else ["momentum_buffer"])
    torch.manual_seed(0)
    model = Net().double()
    opt = k_support_sfw(model, direction)
    state = dict(zip(("model", "optim"), get_state_dict(model, opt)))
    dcp.load(state, checkpoint_id=str(folder / f"ckpt{tag}"))
    set_state_dict(model, opt, model_state_dict=state["model"], optim_state_dict=state["optim"])
    assert opt.nonfinite_steps == 1
    for x, y in batches(torch.float64, CHECKPOINT_STEPS)[CHECKPOINT_AT:]:
        opt.zero_grad()
        nn.functional.mse_loss(model(x), y).backward()
        opt.step()
    after = torch.load(folder / f"after{tag}.pt", weights_only=True)
    assert max(float((p.detach() - after[n]).abs().max()) for n, p in model.named_parameters()) <= 1e-12


def test_distributed_lmo_is_validated():
    w = nn.Parameter(torch.zeros(3))
    with pytest.raises(ValueError, match="distributed_lmo='sometimes'"):
        sparsefw.SFW([w], distributed_lmo="sometimes")


def test_auto_cost_model_prefers_native_above_about_4k_entries():
    """Bytes received per rank (2 ranks, float32): k-support native is a fixed ~8 KiB, so gathering
    wins below ~4K entries; L2 and group norms are always cheaper natively."""
    def pick(region, shape):
        lay = Layout(torch.Size(shape), 0, -(-shape[0] // 2), -(-shape[0] // 2))
        return cost(region, [lay], 2, 4, True) <= cost(region, [lay], 2, 4, False)
    assert not pick(KSupportBall((64, 32), k=0.1, radius=1.0), (64, 32))
    assert pick(KSupportBall((128, 64), k=0.1, radius=1.0), (128, 64))
    assert pick(L2Ball((64, 32), radius=1.0), (64, 32))
    assert pick(GroupKSupportBall((16, 8, 3, 3), k=0.5, radius=1.0), (16, 8, 3, 3))
    assert pick(SpectralKSupportBall((4096, 64), k=8, radius=1.0), (4096, 64))      # Gram 32 KiB < 512 KiB
    assert not pick(SpectralKSupportBall((200, 64), k=8, radius=1.0), (200, 64))    # Gram 32 KiB > 25 KiB

def test_nonfinite_steps_survive_the_dcp_state_dict_helpers(tmp_path):
    """`get_state_dict` / `set_state_dict` keep only "state" and "param_groups": the count rides in
    every param group and leaves no key behind in the loaded groups (one process, no process group)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    def make():
        torch.manual_seed(0)
        model = nn.Linear(4, 3)
        return model, sparsefw.SFW([{"params": [model.weight], "constraint": L2Ball((3, 4), radius=10.0)},
                                    {"params": [model.bias]}], lr=0.1)
    model, opt = make()
    for bad in (False, True, False):
        opt.zero_grad()
        model(torch.ones(2, 4)).sum().backward()
        if bad:
            model.weight.grad[0, 0] = float("inf")
        opt.step()
    assert opt.nonfinite_steps == 1
    model_state, optim_state = get_state_dict(model, opt)
    assert set(optim_state) == {"state", "param_groups"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dcp.save({"model": model_state, "optim": optim_state}, checkpoint_id=str(tmp_path))
        again, opt2 = make()
        state = dict(zip(("model", "optim"), get_state_dict(again, opt2)))
        dcp.load(state, checkpoint_id=str(tmp_path))
    set_state_dict(again, opt2, model_state_dict=state["model"], optim_state_dict=state["optim"])
    assert opt2.nonfinite_steps == 1
    assert all("nonfinite_steps" not in g for g in opt2.param_groups)
    assert torch.equal(opt2.state[again.weight]["momentum_buffer"], opt.state[model.weight]["momentum_buffer"])
