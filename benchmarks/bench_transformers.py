"""Transformers: coupled removal of attention heads and FFN units side by side, and the radius rules.

Run:  PYTHONPATH=src python benchmarks/bench_transformers.py speed [--repeats 30] [--quick]
          (writes the "transformers" section of BENCHMARKS.md; torch-pruning optional)
      PYTHONPATH=src python benchmarks/bench_transformers.py radii
          (seconds; prints the radius-rule table of the transformer zoo)
      PYTHONPATH=src python benchmarks/bench_transformers.py training [--seeds 0 1 2] [--methods ...] [--cnn]
          (AdamW against SFW's transformer modes on a small ViT; results/transformer_training.jsonl,
          --report writes the "transformer_training" section; --cnn: the spectral modes on two CNN tasks)

speed: a ViT (6 blocks, hidden 256, 8 heads, MLP 1024, 8×8 patches) and a GPT-style decoder (4
blocks, hidden 256, 8 heads, MLP 1024, causal, lm_head tied to the token embedding; also with
GPT-2's Conv1D blocks), written as Hugging Face writes them (separate q/k/v Linears, the forward reads num_attention_heads,
attention_head_size and all_head_size; SDPA). Variants of each, measured side by side:

    dense        the model (library init: N(0, 0.02²) weights, then ×U(3, 5) as a checkpoint)
    sparsefw     remove_filters(model, 0.5, x, coupled=True): half the heads of every block and
                 half its FFN units (the LayerNorm'd residual stream stays whole), attributes
                 patched by the library
    native       the same class built at 4 heads and MLP 512: the physical limit
    torch-pruning  MetaPruner (magnitude importance) given every q/k/v Linear's head count,
                 prune_num_heads, head ratio 0.5, FFN ratio 0.5, the residual writers ignored;
                 its head counts then patched by hand (it leaves them to the user)

Parameters and FLOPs (`sparsefw.compress` metrics, the attention+FFN share separately) and CPU
latency (eval, no grad, interleaved rounds: every variant once per round, the order rotated; the
median time and the median of per-round ratios) at two batch sizes × two sequence lengths (ViT:
64×64 and 96×96 images = 65 and 145 tokens).
"""
from __future__ import annotations

import argparse
import copy
import math
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "compress"))

import _harness as H  # noqa: E402
import sparsefw  # noqa: E402
from sparsefw.compress import count_flops, count_parameters, remove_filters  # noqa: E402
from transformer_zoo import Conv1D  # noqa: E402  (Hugging Face's (in, out)-stored layer)

D, HEADS, MLP, VOCAB, CONTEXT = 256, 8, 1024, 1000, 256


# ---- the models ------------------------------------------------------------------------------
class Attention(nn.Module):
    """Hugging Face's ViTSelfAttention + ViTSelfOutput: heads by num_attention_heads and
    attention_head_size, merged to all_head_size."""

    def __init__(self, d: int, heads: int, head_size: int, causal: bool):
        super().__init__()
        self.num_attention_heads, self.attention_head_size = heads, head_size
        self.all_head_size, self.causal = heads * head_size, causal
        self.query, self.key, self.value = (nn.Linear(d, self.all_head_size) for _ in range(3))
        self.dense = nn.Linear(self.all_head_size, d)

    def forward(self, x):
        shape = x.shape[:-1] + (self.num_attention_heads, self.attention_head_size)
        q, k, v = (f(x).view(shape).transpose(1, 2) for f in (self.query, self.key, self.value))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=self.causal)
        return self.dense(y.transpose(1, 2).reshape(x.shape[:-1] + (self.all_head_size,)))


class Block(nn.Module):
    def __init__(self, d: int, heads: int, head_size: int, mlp: int, causal: bool):
        super().__init__()
        self.ln_1, self.ln_2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.attention = Attention(d, heads, head_size, causal)
        self.intermediate, self.output = nn.Linear(d, mlp), nn.Linear(mlp, d)

    def forward(self, x):
        x = x + self.attention(self.ln_1(x))
        return x + self.output(F.gelu(self.intermediate(self.ln_2(x))))


class ViT(nn.Module):
    def __init__(self, depth=6, heads=HEADS, mlp=MLP, d=D, head_size=D // HEADS, patch=8, max_tokens=145,
                 classes=1000):
        super().__init__()
        self.patch_embeddings = nn.Conv2d(3, d, patch, patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.position_embeddings = nn.Parameter(torch.zeros(1, max_tokens, d))
        self.blocks = nn.ModuleList(Block(d, heads, head_size, mlp, False) for _ in range(depth))
        self.layernorm, self.classifier = nn.LayerNorm(d), nn.Linear(d, classes)

    def forward(self, pixel_values):
        x = self.patch_embeddings(pixel_values).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], 1)
        x = x + self.position_embeddings[:, :x.shape[1]]
        for block in self.blocks:
            x = block(x)
        return self.classifier(self.layernorm(x)[:, 0])


class GPT(nn.Module):
    def __init__(self, depth=4, heads=HEADS, mlp=MLP, d=D, head_size=D // HEADS):
        super().__init__()
        self.wte, self.wpe = nn.Embedding(VOCAB, d), nn.Embedding(CONTEXT, d)
        self.blocks = nn.ModuleList(Block(d, heads, head_size, mlp, True) for _ in range(depth))
        self.ln_f, self.lm_head = nn.LayerNorm(d), nn.Linear(d, VOCAB, bias=False)
        self.lm_head.weight = self.wte.weight

    def forward(self, input_ids):
        x = self.wte(input_ids) + self.wpe(torch.arange(input_ids.shape[1], device=input_ids.device))
        for block in self.blocks:
            x = block(x)
        return self.lm_head(self.ln_f(x))


class GPT2Block(nn.Module):
    """Hugging Face's GPT2Block: a fused c_attn split by split_size, heads by num_heads and head_dim,
    Conv1D layers throughout, tanh GELU."""

    def __init__(self, d: int, heads: int, head_size: int, mlp: int):
        super().__init__()
        self.num_heads, self.head_dim, self.split_size = heads, head_size, heads * head_size
        self.ln_1, self.ln_2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.c_attn, self.attn_proj = Conv1D(3 * self.split_size, d), Conv1D(d, self.split_size)
        self.c_fc, self.mlp_proj = Conv1D(mlp, d), Conv1D(d, mlp)

    def forward(self, x):
        q, k, v = self.c_attn(self.ln_1(x)).split(self.split_size, dim=2)
        shape = x.shape[:-1] + (self.num_heads, self.head_dim)
        y = F.scaled_dot_product_attention(*(t.view(shape).transpose(1, 2) for t in (q, k, v)), is_causal=True)
        x = x + self.attn_proj(y.transpose(1, 2).reshape(x.shape[:-1] + (self.num_heads * self.head_dim,)))
        return x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x)), approximate="tanh"))


class GPT2(GPT):
    """The GPT decoder with GPT-2's Conv1D blocks (Torch-Pruning has no pruner for Conv1D)."""

    def __init__(self, depth=4, heads=HEADS, mlp=MLP, d=D, head_size=D // HEADS):
        super().__init__(0, heads, mlp, d, head_size)
        self.blocks = nn.ModuleList(GPT2Block(d, heads, head_size, mlp) for _ in range(depth))


def inputs(name: str, batch: int, length: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(batch * 1000 + length)
    if name == "vit":
        side = int(math.isqrt(length - 1)) * 8
        return torch.randn(batch, 3, side, side, generator=g)
    return torch.randint(0, VOCAB, (batch, length), generator=g)


SHAPES = {"vit": [(1, 65), (1, 145), (8, 65), (8, 145)], "gpt": [(1, 64), (1, 256), (8, 64), (8, 256)]}
SHAPES["gpt2"] = SHAPES["gpt"]
BUILD = {"vit": ViT, "gpt": GPT, "gpt2": GPT2}


def checkpoint_like(model: nn.Module, seed: int = 0) -> nn.Module:
    from transformer_zoo import library_init, pretrained_like
    torch.manual_seed(seed)
    return pretrained_like(library_init(model), seed).eval()


# ---- the variants ----------------------------------------------------------------------------
def torch_pruned(model: nn.Module, x: torch.Tensor) -> nn.Module | str:
    """Torch-Pruning's MetaPruner on a copy, given the head counts; its head counts patched by hand
    afterwards (num_attention_heads, all_head_size), which it leaves to the user. A reason if it
    is not installed or fails."""
    try:
        import torch_pruning as tp
    except ImportError:
        return "torch-pruning not installed"
    if any(isinstance(m, Conv1D) for m in model.modules()):
        return "Torch-Pruning 1.6 has no pruner for Conv1D (weight stored (in, out))"
    import copy
    model = copy.deepcopy(model)
    attentions = [m for m in model.modules() if isinstance(m, Attention)]
    heads = {layer: m.num_attention_heads for m in attentions for layer in (m.query, m.key, m.value)}
    residual_writers = [m for b in model.modules() if isinstance(b, Block) for m in (b.attention.dense, b.output)]
    ends = [m for m in model.modules() if isinstance(m, (nn.Embedding, nn.Conv2d))]
    ignored = residual_writers + ends + [getattr(model, "classifier", None) or model.lm_head]
    try:
        pruner = tp.pruner.MetaPruner(model, x, importance=tp.importance.GroupMagnitudeImportance(p=2),
                                      pruning_ratio=0.5, ignored_layers=ignored, num_heads=heads,
                                      prune_num_heads=True, prune_head_dims=False, head_pruning_ratio=0.5)
        pruner.step()
    except Exception as exc:  # report, do not stop the benchmark
        return f"torch-pruning failed: {type(exc).__name__}: {exc}"
    for m in attentions:  # the manual step Torch-Pruning's examples do
        m.num_attention_heads = pruner.num_heads[m.query]
        m.all_head_size = m.num_attention_heads * m.attention_head_size
    return model


def variants(name: str, **size) -> dict[str, nn.Module | str]:
    """dense, sparsefw, native and torch-pruning (or why not) of net `name` (`size`: depth, heads,
    mlp, d, head_size of the dense net)."""
    size = {"heads": HEADS, "mlp": MLP, **size}
    model = checkpoint_like(BUILD[name](**size))
    x = inputs(name, *SHAPES[name][0])
    native = checkpoint_like(BUILD[name](**{**size, "heads": size["heads"] // 2, "mlp": size["mlp"] // 2}))
    return {"dense": model, "sparsefw": remove_filters(model, 0.5, x, coupled=True).eval(),
            "native": native, "torch-pruning": torch_pruned(model, x)}


def block_parameters(model: nn.Module) -> int:
    """Attention + FFN parameters (q, k, v, o, intermediate, output; not LayerNorms)."""
    return sum(p.numel() for b in model.modules() if isinstance(b, (Block, GPT2Block))
               for m in b.children() if not isinstance(m, nn.LayerNorm) for p in m.parameters())


def deviation(model: nn.Module, dense: nn.Module, x: torch.Tensor) -> float:
    with torch.no_grad():
        a, b = model(x), dense(x)
    return float((a - b).norm() / b.norm())


def timings(models: dict[str, nn.Module], x: torch.Tensor, repeats: int) -> dict[str, list[float]]:
    """Milliseconds of one forward of every model, one sample per round, interleaved with the order
    rotating (`_harness.interleaved`), so that per-round ratios cancel the machine's drift."""
    with torch.no_grad():
        samples = H.interleaved({k: (lambda m=m: m(x)) for k, m in models.items()}, repeats)
    return {k: [t * 1e3 for t in v] for k, v in samples.items()}


def measure(name: str, repeats: int, **size) -> list[dict]:
    models = variants(name, **size)
    runnable = {k: m for k, m in models.items() if isinstance(m, nn.Module)}
    same = [tuple(p.shape) for p in runnable["sparsefw"].parameters()] == [tuple(p.shape) for p in runnable["native"].parameters()]
    rows = []
    for batch, length in SHAPES[name]:
        x = inputs(name, batch, length)
        times = timings(runnable, x, repeats * max(1, 8 // batch))  # about equal time per shape
        for key, model in models.items():
            if not isinstance(model, nn.Module):
                rows.append({"net": name, "variant": key, "batch": batch, "length": length, "note": model})
                continue
            rows.append({"net": name, "variant": key, "batch": batch, "length": length, "same_shapes": same,
                         "params": count_parameters(model), "block_params": block_parameters(model),
                         "flops": count_flops(model, x), "ms": statistics.median(times[key]),
                         "vs_native": statistics.median(a / b for a, b in zip(times[key], times["native"])),
                         "vs_dense": statistics.median(b / a for a, b in zip(times[key], times["dense"])),
                         "dev": deviation(model, models["dense"], x)})
    return rows


def table(rows: list[dict]) -> str:
    dense = {(r["net"], r["batch"], r["length"]): r for r in rows if r["variant"] == "dense"}
    lines = ["| net | batch × length | variant | params | attn+FFN params / dense | FLOPs / dense | "
             "latency ms (median) | speed-up vs dense (median of per-round ratios) | latency / native (same) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        key = (r["net"], r["batch"], r["length"])
        if "note" in r:
            lines.append(f"| {r['net']} | {r['batch']} × {r['length']} | {r['variant']} | {r['note']} |||||")
            continue
        d = dense[key]
        lines.append(f"| {r['net']} | {r['batch']} × {r['length']} | {r['variant']} | {r['params'] / 1e6:.3f} M | "
                     f"{r['block_params'] / d['block_params']:.3f} | {r['flops'] / d['flops']:.3f} | {r['ms']:.2f} | "
                     f"{r['vs_dense']:.2f}× | {r['vs_native']:.2f} |")
    return "\n".join(lines)


_SETUP = ("ViT: 6 blocks, hidden 256, 8 heads of 32, MLP 1024, 8×8 patches (64×64 and 96×96 images = 65 and "
          "145 tokens); GPT: 4 blocks, hidden 256, 8 heads of 32, MLP 1024, causal SDPA, lm_head tied to the "
          "token embedding. Both Hugging Face-style (separate q/k/v Linears; the forward reads "
          "num_attention_heads, attention_head_size, all_head_size), checkpoint-like weights. "
          "**sparsefw**: `remove_filters(model, 0.5, x, coupled=True)` — half the heads and half the FFN units "
          "of every block, the head counts patched by the library (nothing by hand). **native**: the same "
          "class built with 4 heads and MLP 512. **torch-pruning** 1.6: MetaPruner, GroupMagnitudeImportance, "
          "given each q/k/v Linear's head count, prune_num_heads, head ratio 0.5, ratio 0.5, residual writers "
          "ignored; afterwards num_attention_heads and all_head_size set by hand, as its examples do. "
          "**gpt2**: the GPT decoder with Hugging Face's GPT2Block (fused c_attn split by split_size, (in, out) "
          "Conv1D layers, tanh GELU), which Torch-Pruning has no pruner for. Latency: eval, no grad, 1 thread, median of "
          "interleaved rounds (8× as many at batch 1 as at batch 8), the order rotated; ratios are medians of per-round ratios (both models timed in the same "
          "round), which cancels the drift of a loaded machine better than a ratio of medians.")


def speed(args: argparse.Namespace) -> dict[str, str]:
    size = {"depth": 1, "d": 64, "heads": 4, "head_size": 16, "mlp": 128} if args.quick else {}
    repeats = 2 if args.quick else args.repeats
    rows = [r for net in ("vit", "gpt", "gpt2") for r in measure(net, repeats, **size)]
    markdown = (f"## Transformers: heads and FFN units removed (coupled) vs native vs Torch-Pruning\n\n"
                f"Command: `PYTHONPATH=src {args.command}`\n\n{H.machine_line()} {H.load_line()} (the "
                f"machine is shared: single shapes move by ±20 % between runs; compare medians).\n\n"
                f"{_SETUP}\n\n{_reading(rows)}\n\n{table(rows)}\n")
    return {"transformers": markdown}


def _reading(rows: list[dict]) -> str:
    """The goals, read from the rows: attn+FFN share ≤ 0.52, latency within 10 % of native, at
    least Torch-Pruning's speed-up (medians over the four shapes of the per-round ratios)."""
    out = []
    for net in ("vit", "gpt", "gpt2"):
        def of(variant, field):
            return [r[field] for r in rows if r["net"] == net and r["variant"] == variant and field in r]
        ours, native, tp = of("sparsefw", "vs_dense"), of("native", "vs_dense"), of("torch-pruning", "vs_dense")
        dense_blocks = of("dense", "block_params")[0]
        out.append(
            f"- **{net}**: attention+FFN parameters {of('sparsefw', 'block_params')[0] / dense_blocks:.3f} of dense "
            f"(goal ≤ 0.52), parameter shapes identical to the native net: {of('sparsefw', 'same_shapes')[0]}; "
            f"speed-up over dense {statistics.median(ours):.2f}× (shapes {min(ours):.2f}–{max(ours):.2f}×), "
            f"native {statistics.median(native):.2f}×, Torch-Pruning "
            + (f"{statistics.median(tp):.2f}×" if tp else "–")
            + f"; sparsefw latency / native {min(of('sparsefw', 'vs_native')):.2f}–"
            f"{max(of('sparsefw', 'vs_native')):.2f} (goal ≤ 1.10)"
            + (f", Torch-Pruning's {min(of('torch-pruning', 'vs_native')):.2f}–"
               f"{max(of('torch-pruning', 'vs_native')):.2f}" if tp else "")
            + f". Output change vs dense (one-shot, no retraining): {max(of('sparsefw', 'dev')):.3f} relative.")
    out.append("- The three 50 % variants compute with the same layer sizes (sparsefw's parameter shapes are "
               "the native net's; Torch-Pruning reaches the same counts), so their latency differences, of "
               "either sign from shape to shape, are the shared machine's noise: the speed-up is the "
               "native net's, with no manual step (Torch-Pruning needs its head counts patched by hand).")
    return "\n".join(out)


# ---- radii: how the radius rules of `constrain` fit transformers (was bench_transformer_radii) --
def _state(name: str, state: str) -> torch.nn.Module:
    from sparsefw.assign import is_norm_scale_layer
    from transformer_zoo import build
    model, _ = build(name, pretrained=state == "pretrained")
    if state == "torch":
        torch.manual_seed(0)
        for module in model.modules():
            if hasattr(module, "reset_parameters") and not is_norm_scale_layer(module):
                module.reset_parameters()
    return model


def _kind(model: torch.nn.Module, name: str, p: torch.Tensor) -> str:
    from sparsefw.assign import is_norm_scale_layer
    module = model.get_submodule(name.rpartition(".")[0])
    if isinstance(module, torch.nn.Embedding):
        return "embedding"
    return "weight" if p.dim() >= 2 else "norm" if is_norm_scale_layer(module) else "bias"


def ratios(model: torch.nn.Module) -> dict[str, list[float]]:
    """ρ = ‖θ‖ / E‖θ_init‖ per tensor kind (zero tensors left out)."""
    from sparsefw.radii import expected_init_norms
    norms, out = expected_init_norms(model), {}
    for name, p in model.named_parameters():
        current = float(p.detach().norm())
        if current > 0:
            out.setdefault(_kind(model, name, p), []).append(current / norms[name])
    return out


def worst_slack(model: torch.nn.Module, mode: str) -> tuple[float, str]:
    """max over single-tensor regions of gauge / radius under the "init" rule, on the weights before
    set-up scaled anything (> 1: that tensor is scaled), and which tensor."""
    import sparsefw
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    groups = sparsefw.constrain(model, mode, fixed_step="optimizer", radius_rule="init")
    return max((float(g["constraint"].norm(before[g["name"]])) / g["constraint"].radius, g["name"])
               for g in groups if not hasattr(g["constraint"], "pack"))


def radii(args: argparse.Namespace) -> dict[str, str]:
    """The ratio ρ of every tensor and the slack of the "init" rule's regions on the transformer zoo
    (tests/compress/transformer_zoo.py) in three states — library (fresh, the libraries' init),
    torch (PyTorch's reset_parameters), pretrained (`pretrained_like`) — and the checkpoint
    detector of radius_rule="auto" (`radii.moved_norm_parameters`)."""
    from sparsefw.radii import moved_norm_parameters
    from transformer_zoo import ZOO
    print("| model | state | ρ weights (min–max) | ρ embeddings | worst gauge/radius k_support | l2 | checkpoint? |")
    print("|---|---|---|---|---|---|---|")
    for name in ZOO:
        for state in ("library", "torch", "pretrained"):
            r = ratios(_state(name, state))
            w, e = r.get("weight", []), r.get("embedding", [])
            span = lambda v: f"{min(v):.3g}–{max(v):.3g} (median {statistics.median(v):.3g})" if v else "–"  # noqa: E731
            slack = [f"{v:.3g} ({n})" for v, n in (worst_slack(_state(name, state), m) for m in ("k_support", "l2"))]
            print(f"| {name} | {state} | {span(w)} | {span(e)} | {slack[0]} | {slack[1]} | "
                  f"{bool(moved_norm_parameters(_state(name, state)))} |")
    return {}


def _speed_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--repeats", type=int, default=30, help="interleaved rounds per shape at batch 8 (8× at batch 1)")


# --- variant "training" (issue 25): SFW's transformer modes against AdamW ---------------------------------
TRAINING_DOC = """Training a small transformer with SFW (issue 25, item 1): AdamW against
`SFW(constrain(model, mode, example_inputs=x))` with nothing else set, dense accuracy and the share
kept after truncating every hidden Linear layer of the blocks to ¼ and ⅛ of its rank
(`sparsefw.compress.factorize(model.blocks, rank=r, layers="linear")`, no retraining).

Task: Fashion-MNIST (offline), each 28×28 image as 16 tokens of 7×7 patches; a pre-LN ViT-like
model (patch Linear 49 → d, learned positions, `blocks` pre-LN blocks with q/k/v/o Linear layers and
a GELU FFN, final LayerNorm, mean pool, Linear head). Every run: batch 128, linear lr decay to 0,
one thread.

Methods ("name" or "name:key=value,..."):
    adamw[:lr=..,wd=..]        AdamW lr 3e-3, weight decay 0.05 (dense baseline)
    sfw:<mode>[:k=..,spectral_width=..,fixed_step=..,lr=..,rest=adam|momentum,rest_lr=..,matrix_dir=adam]
                               SFW(constrain(model, mode, example_inputs=x, **opts), lr=lr or 0.1);
                               rest: the groups outside the spectral regions get that direction,
                               lr rest_lr (3e-3) and the gradient-rescaled step (variants measured);
                               matrix_dir=adam: the matrix groups' LMO takes Adam's direction (AdaSFW)

The `sfw:` rows from scratch ran before issue 24's rule that every region holds its start (one FFN
weight was then scaled by ≈ 0.96 at set-up); with the start held (results/
transformer_training_start_held.jsonl) "spectral_polytope" k ¼ reaches 0.834 ± 0.003, kept 0.999 /
0.91, and k ⅛ is unchanged (docs/tuning.md "Training transformers"). `ft:<method>`: AdamW (lr 3e-3)
for the epochs given — the `adamw` row's model, seed for seed: its kept shares are the post-training
truncated SVD of that checkpoint — then `<method>` for a quarter of those epochs from it (radii by
the default radius rule "auto": the checkpoint's own)."""
RANKS = (0.25, 0.125)
DEFAULT_METHODS = ["adamw", "sfw:spectral", "sfw:spectral_polytope", "sfw:spectral_polytope:k=0.125",
                   "ft:sfw:spectral_polytope", "ft:sfw:spectral_polytope:k=0.125",
                   "ft:sfw:spectral_polytope:fixed_step=0.01", "ft:sfw:spectral_polytope:fixed_step=0.005"]


class TinyBlock(nn.Module):
    """Pre-LN transformer block with separate q, k, v, o projections (each a factorizable Linear)."""

    def __init__(self, d: int, heads: int, ffn: int):
        super().__init__()
        self.heads = heads
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.q, self.k, self.v, self.o = (nn.Linear(d, d) for _ in range(4))
        self.fc1, self.fc2 = nn.Linear(d, ffn), nn.Linear(ffn, d)

    def forward(self, x):
        b, t, d = x.shape
        h = self.ln1(x)
        q, k, v = (f(h).view(b, t, self.heads, -1).transpose(1, 2) for f in (self.q, self.k, self.v))
        x = x + self.o(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, t, d))
        return x + self.fc2(F.gelu(self.fc1(self.ln2(x))))


class TinyViT(nn.Module):
    def __init__(self, d=64, heads=4, ffn=128, blocks=2, tokens=16, patch=49, classes=10):
        super().__init__()
        self.embed = nn.Linear(patch, d)
        self.pos = nn.Parameter(0.02 * torch.randn(tokens, d))
        self.blocks = nn.Sequential(*(TinyBlock(d, heads, ffn) for _ in range(blocks)))
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, classes)

    def forward(self, x):
        return self.head(self.norm(self.blocks(self.embed(x) + self.pos)).mean(1))


def patches(images: torch.Tensor) -> torch.Tensor:
    """(N, 1, 28, 28) → (N, 16, 49): 7×7 patches in row-major order."""
    return images.unfold(2, 7, 7).unfold(3, 7, 7).reshape(images.shape[0], 16, 49)


def load(n_train: int, n_test: int):
    from sparsefw.data import get_datasets
    train, test, _ = get_datasets("fashion_mnist", subset=(n_train, n_test))
    return (patches(train.images), train.targets.long()), (patches(test.images), test.targets.long())


def parse(method: str) -> tuple[str, str | None, dict]:
    """'sfw:spectral_polytope:k=0.125,lr=0.05' → ("sfw", "spectral_polytope", {"k": 0.125, "lr": 0.05})."""
    kind, _, rest = method.partition(":")
    mode, _, opts = rest.partition(":") if kind != "adamw" else ("", "", rest)
    options = {}
    for item in filter(None, opts.split(",")):
        key, _, value = item.partition("=")
        try:
            options[key] = int(value) if value.isdigit() and key == "k" else float(value)
        except ValueError:
            options[key] = value
    return kind, mode or None, options


def vit_optimizer(method: str, model: nn.Module, example: torch.Tensor) -> torch.optim.Optimizer:
    kind, mode, options = parse(method)
    if kind == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=options.get("lr", 3e-3), weight_decay=options.get("wd", 0.05))
    lr, rest, rest_lr = options.pop("lr", 0.1), options.pop("rest", None), options.pop("rest_lr", 3e-3)
    matrix_direction = options.pop("matrix_dir", None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        groups = sparsefw.constrain(model, mode, example_inputs=example, **options)
    for group in groups:       # variants for the parameters outside / inside the matrix regions
        matrix = type(group["constraint"]).__name__ in ("SpectralBall", "SpectralPolytope")
        if rest is not None and not matrix:
            group.update(direction="adam" if rest == "adam" else "momentum", lr=rest_lr, rescale="gradient")
        elif matrix_direction is not None and matrix:
            group["direction"] = matrix_direction          # AdaSFW: Adam-preconditioned LMO input
    return sparsefw.SFW(groups, lr=lr)


def _fit_vit(model: nn.Module, opt: torch.optim.Optimizer, epochs: int, train, generator: torch.Generator) -> float:
    """`epochs` epochs of batch 128, lr decayed linearly to 0; the last batch's loss."""
    x, y = train
    steps = epochs * math.ceil(len(y) / 128)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 1 - t / steps)
    for _ in range(epochs):
        for idx in torch.randperm(len(y), generator=generator).split(128):
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    return loss.item()


def _vit_scores(model: nn.Module, test) -> dict[str, float]:
    """Dense accuracy and the accuracy after truncating every hidden Linear of the blocks to each rank."""
    scores = {"dense": H.accuracy(model, *test, num_classes=10)}
    for r in RANKS:
        small = copy.deepcopy(model)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            small.blocks = sparsefw.compress.factorize(model.blocks, rank=r, layers="linear", skip_no_saving=False)
        scores[f"rank_{r}"] = H.accuracy(small, *test, num_classes=10)
    return scores


def train_vit(method: str, seed: int, epochs: int, train, test) -> dict:
    """Train `method` from scratch, or ("ft:<method>") AdamW for `epochs`, then `method` for a quarter of
    them from that checkpoint (the checkpoint's own scores recorded as "pre_*": post-training SVD)."""
    torch.manual_seed(seed)
    model, x = TinyViT(), train[0]
    generator, start = torch.Generator().manual_seed(seed), time.perf_counter()
    finetune = method.startswith("ft:")
    loss = _fit_vit(model, vit_optimizer("adamw" if finetune else method, model, x[:64]), epochs, train, generator)
    record = dict(method=method, seed=seed, epochs=epochs, n_train=len(x), n_test=len(test[1]))
    if finetune:
        record.update({f"pre_{key}": value for key, value in _vit_scores(model, test).items()})
        loss = _fit_vit(model, vit_optimizer(method[3:], model, x[:64]), max(1, epochs // 4), train, generator)
    return {**record, "seconds": round(time.perf_counter() - start, 1), "loss": round(loss, 4),
            **_vit_scores(model, test)}


def training_table(records: list[dict]) -> str:
    """Markdown: per method, mean ± std over seeds of dense accuracy and kept shares."""
    by: dict[tuple, list[dict]] = {}
    for r in records:
        by.setdefault((r["method"], r["epochs"], r["n_train"]), []).append(r)
    lines = ["| method | epochs | n_train | seeds | dense | kept at ¼ rank | kept at ⅛ rank | s/run |",
             "|---|---|---|---|---|---|---|---|"]

    def stat(values):
        return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}" if len(values) > 1 \
            else f"{values[0]:.3f}"
    for (method, epochs, n), rs in by.items():
        kept = [[x[f"rank_{r}"] / x["dense"] for x in rs] for r in RANKS]
        lines.append(f"| {method} | {epochs} | {n} | {len(rs)} | {stat([x['dense'] for x in rs])} | "
                     f"{stat(kept[0])} | {stat(kept[1])} | {statistics.mean(x['seconds'] for x in rs):.0f} |")
    return "\n".join(lines)


def cnn_check(seeds: list[int], log: Path) -> None:
    """The spectral modes on two BN CNN tasks of bench_robustness.py (digits; Fashion-MNIST, the held-out
    task) against the CNN low-rank default "spectral_k_support": dense and kept at 50 % / 25 % rank
    (`factorize(layers="conv")`), logged to `log` with "task"."""
    import _tasks as T
    from bench_robustness import HELD_OUT, tasks
    chosen = [t for t in tasks() if t.name.startswith("digits") or t.name == HELD_OUT]
    levels = [lv for lv in T.LEVELS if lv[0] == "lowrank"]
    for task in chosen:
        for seed in seeds:
            for method in ("spectral_k_support", "spectral_polytope", "spectral"):
                def one():
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        model, seconds = T.train(task, method, seed)
                        return {"seconds": round(seconds, 1), "scores": T.sweep(task, model, levels)}
                T.run_logged(log, {"task": task.name, "method": method, "seed": seed}, one)
    for r in H.read_jsonl(log):
        print(r["task"], r["method"], r["seed"], {k: round(v, 3) for k, v in r["scores"].items()})


def training(args) -> dict[str, str]:
    log = args.results / "transformer_training.jsonl"
    if args.cnn:
        cnn_check([0] if args.quick else args.seeds, args.results / "transformer_training_cnn.jsonl")
        return {}
    if args.quick:
        args.seeds, args.epochs, args.train, args.test = [0], 2, 1000, 500
    if not args.report:
        data = load(args.train, args.test)
        done = {(r["method"], r["seed"], r["epochs"], r["n_train"]) for r in H.read_jsonl(log)}
        for seed in args.seeds:
            for method in args.methods:
                if (method, seed, args.epochs, args.train) not in done:
                    record = train_vit(method, seed, args.epochs, *data)
                    print(record, flush=True)
                    H.append_jsonl(log, record)
    shown = [r for r in H.read_jsonl(log) if r["method"] in args.methods and r["seed"] in args.seeds
             and r["epochs"] == args.epochs and r["n_train"] == args.train]
    return {"transformer_training": "\n".join([
        "## Training a small transformer with SFW (`benchmarks/bench_transformers.py training`)", "",
        f"Command: `{args.command}`. {H.machine_line()}", "", TRAINING_DOC, "",
        "Cells: mean ± std over seeds; kept = accuracy after truncating every hidden Linear of the blocks / dense.", "",
        training_table(shown)])}


def _training_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--methods", nargs="+", default=DEFAULT_METHODS)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--train", type=int, default=10000)
    parser.add_argument("--test", type=int, default=5000)
    parser.add_argument("--cnn", action="store_true", help="the spectral modes on two CNN tasks instead (cnn_check)")


VARIANTS = {
    "speed": H.Variant(speed, "heads + FFN units removed vs dense vs native vs Torch-Pruning (section transformers)",
                       _speed_arguments),
    "radii": H.Variant(radii, "the radius rules on the transformer zoo (prints a table)"),
    "training": H.Variant(training, "AdamW against SFW's transformer modes, dense and kept at ¼, ⅛ rank "
                          "(section transformer_training)", _training_arguments, report=True),
}

if __name__ == "__main__":
    warnings.simplefilter("ignore")
    H.main("bench_transformers.py", __doc__, VARIANTS)
