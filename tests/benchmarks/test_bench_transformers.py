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
        block = ours.h[0]
        assert (block.num_heads, block.head_dim, block.split_size, block.c_attn.nf) == (2, 8, 16, 48)
        assert isinstance(models["torch-pruning"], str)
    else:
        attention = next(m for m in ours.modules() if isinstance(m, bench.SelfAttention))
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


@pytest.mark.parametrize("name", ["vit", "gpt"])
def test_the_training_variants_compressions_touch_the_blocks_only_and_do_what_they_say(name):
    """`compressed` at every level on the library's ViT / GPT: half the heads (the count the forward
    reads) and FFN units; 90 % of the blocks' weights zero; every 4 consecutive inputs at most 2
    nonzero; factors of rank r·d; Wanda's model equal to the original outside the blocks."""
    from sparsefw.compress.factorize import FactorizedLinear
    from sparsefw.models import build_model
    blocks = {"vit": "layer", "gpt": "h"}[name]
    model = build_model(name, 10, 1, 28 if name == "vit" else 16, seed=0, dim=16, heads=4, mlp=32).eval()
    x = torch.randn(16, 1, 28, 28) if name == "vit" else torch.randint(0, 10, (16, 16))
    heads = bench.compressed(model, blocks, "heads_ffn", x)
    assert heads.eval()(x).shape == model(x).shape
    assert all(b.attention.num_attention_heads == 2 and b.intermediate.out_features == 16 for b in getattr(heads, blocks))
    outside = {k: v for k, v in model.state_dict().items() if not k.startswith(blocks + ".")}
    for level in ("sparse_90", "nm_2:4"):
        for wanda in (False, True):
            small = bench.compressed(model, blocks, level, x, wanda=wanda)
            state = small.state_dict()
            assert all(torch.equal(state[k], v) for k, v in outside.items())
            weights = [m.weight for m in getattr(small, blocks).modules() if isinstance(m, torch.nn.Linear)]
            zeros = sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights)
            if level == "nm_2:4":
                assert all(int((w.reshape(w.shape[0], -1, 4) != 0).sum(-1).max()) <= 2 for w in weights)
            else:
                assert zeros == pytest.approx(0.9, abs=0.02)      # Wanda: round(0.9·in) per output unit
    for level, rank in (("rank_1/4", 4), ("rank_1/8", 2)):
        small = bench.compressed(model, blocks, level, x)
        factors = [m for m in getattr(small, blocks).modules() if isinstance(m, FactorizedLinear)]
        assert factors and all(m.first.out_features == rank for m in factors)
