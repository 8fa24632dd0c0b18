"""The instruments of benchmarks/bench_transformers.py on small nets: coupled removal of half the
heads and FFN units gives exactly the parameters of the net built natively at those sizes (an
independent truth), keeps the head count the forward reads, and Torch-Pruning (when installed)
ends at the same sizes."""
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import bench_transformers as bench  # noqa: E402


@pytest.mark.parametrize("name", ["vit", "gpt", "gpt2"])
def test_half_the_heads_and_ffn_units_is_the_native_net(name):
    models = bench.variants(name, depth=2, d=32, heads=4, head_size=8, mlp=64)
    dense, ours, native = models["dense"], models["sparsefw"], models["native"]
    assert bench.count_parameters(ours) == bench.count_parameters(native)
    assert bench.block_parameters(ours) / bench.block_parameters(dense) <= 0.52
    if name == "gpt2":
        block = ours.blocks[0]
        assert (block.num_heads, block.head_dim, block.split_size, block.c_attn.nf) == (2, 8, 16, 48)
        assert isinstance(models["torch-pruning"], str)
    else:
        attention = next(m for m in ours.modules() if isinstance(m, bench.Attention))
        assert (attention.num_attention_heads, attention.attention_head_size, attention.all_head_size) == (2, 8, 16)
    x = bench.inputs(name, 2, 17)
    with torch.no_grad():
        assert ours(x).shape == dense(x).shape
    if not isinstance(models["torch-pruning"], str):
        assert bench.count_parameters(models["torch-pruning"]) == bench.count_parameters(native)
    runnable = {k: m for k, m in models.items() if not isinstance(m, str)}
    times = bench.timings(runnable, x, repeats=2)
    assert all(len(t) == 2 for t in times.values())
    rows = [{"net": n, "variant": v, "batch": 1, "length": 5, "params": 1, "block_params": 1, "flops": 1, "ms": 1.0,
             "vs_dense": 1.0, "vs_native": 1.0, "dev": 0.0, "same_shapes": True} for v in models for n in ("vit", "gpt", "gpt2")]
    assert "| sparsefw |" in bench.table(rows) and "parameter shapes identical" in bench._reading(rows)
