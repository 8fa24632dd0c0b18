"""Transformers: coupled removal of attention heads and FFN units side by side, and training for compression.

Run:  PYTHONPATH=src python benchmarks/bench_transformers.py speed [--repeats 30] [--quick]
          (writes the "transformers" section of BENCHMARKS.md; torch-pruning optional)
      PYTHONPATH=src python benchmarks/bench_transformers.py training [--tasks vit gpt] [--seeds 0 1 2] [--methods ...]
          (AdamW against SFW's modes on a ViT and a character-level GPT, each model compressed one-shot;
          results/transformers_compress.jsonl, --report writes the "transformer_training" section)

speed: a ViT and GPT-style decoders written as Hugging Face writes them (the forward reads the head
counts), each measured side by side as dense, with half its heads and FFN units removed by
`remove_filters(coupled=True)`, built natively at that size, and pruned by Torch-Pruning: parameters,
FLOPs and interleaved CPU latency at two batch sizes × two lengths (set-up: sections/transformers.md).
training: every model of sections/transformer_training.md is trained once and compressed at five levels.
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import functools
import math
import statistics
import subprocess
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
from sparsefw.experiments.evaluation import evaluate, token_logits  # noqa: E402
from sparsefw.models import GPT as ZooGPT, Block, SelfAttention  # noqa: E402
from transformer_zoo import Conv1D  # noqa: E402  (Hugging Face's (in, out)-stored layer)

D, HEADS, MLP, VOCAB, CONTEXT = 256, 8, 1024, 1000, 256


# ---- the models ------------------------------------------------------------------------------
class ViT(nn.Module):
    def __init__(self, depth=6, heads=HEADS, mlp=MLP, d=D, head_size=D // HEADS, patch=8, max_tokens=145,
                 classes=1000):
        super().__init__()
        self.patch_embeddings = nn.Conv2d(3, d, patch, patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.position_embeddings = nn.Parameter(torch.zeros(1, max_tokens, d))
        self.blocks = nn.ModuleList(Block(d, heads, mlp, head_size=head_size) for _ in range(depth))
        self.layernorm, self.classifier = nn.LayerNorm(d), nn.Linear(d, classes)

    def forward(self, pixel_values):
        x = self.patch_embeddings(pixel_values).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], 1)
        x = x + self.position_embeddings[:, :x.shape[1]]
        for block in self.blocks:
            x = block(x)
        return self.classifier(self.layernorm(x)[:, 0])


def gpt(depth=4, heads=HEADS, mlp=MLP, d=D, head_size=D // HEADS) -> nn.Module:
    """The zoo's GPT (Hugging Face's attention, lm_head tied to the token embedding)."""
    return ZooGPT(VOCAB, CONTEXT, d, depth, heads, mlp, head_size=head_size)


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


class GPT2(ZooGPT):
    """The GPT decoder with GPT-2's Conv1D blocks (Torch-Pruning has no pruner for Conv1D)."""

    def __init__(self, depth=4, heads=HEADS, mlp=MLP, d=D, head_size=D // HEADS):
        super().__init__(VOCAB, CONTEXT, d, 1, heads, mlp)
        self.h = nn.ModuleList(GPT2Block(d, heads, head_size, mlp) for _ in range(depth))


def inputs(name: str, batch: int, length: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(batch * 1000 + length)
    if name == "vit":
        side = int(math.isqrt(length - 1)) * 8
        return torch.randn(batch, 3, side, side, generator=g)
    return torch.randint(0, VOCAB, (batch, length), generator=g)


SHAPES = {"vit": [(1, 65), (1, 145), (8, 65), (8, 145)], "gpt": [(1, 64), (1, 256), (8, 64), (8, 256)]}
SHAPES["gpt2"] = SHAPES["gpt"]
BUILD = {"vit": ViT, "gpt": gpt, "gpt2": GPT2}


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
    model = copy.deepcopy(model)
    attentions = [m for m in model.modules() if isinstance(m, SelfAttention)]
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
        return float((model(x) - dense(x)).norm() / dense(x).norm())


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
    header = ["net", "batch × length", "variant", "params", "attn+FFN params / dense", "FLOPs / dense",
              "latency ms (median)", "speed-up vs dense (median of per-round ratios)", "latency / native (same)"]
    cells = []
    for r in rows:
        d, shape = dense[(r["net"], r["batch"], r["length"])], f"{r['batch']} × {r['length']}"
        cells.append([r["net"], shape, r["variant"], r["note"], "", "", "", "", ""] if "note" in r else
                     [r["net"], shape, r["variant"], f"{r['params'] / 1e6:.3f} M",
                      f"{r['block_params'] / d['block_params']:.3f}", f"{r['flops'] / d['flops']:.3f}",
                      f"{r['ms']:.2f}", f"{r['vs_dense']:.2f}×", f"{r['vs_native']:.2f}"])
    return "\n".join(H.table(header, cells))


def speed(args: argparse.Namespace) -> dict[str, str]:
    size = {"depth": 1, "d": 64, "heads": 4, "head_size": 16, "mlp": 128} if args.quick else {}
    repeats = 2 if args.quick else args.repeats
    rows = [r for net in ("vit", "gpt", "gpt2") for r in measure(net, repeats, **size)]
    return {"transformers": H.section("transformers", command=args.command, reading=_reading(rows),
                                      table=table(rows))}


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
    return "\n".join(out)


# --- variant "training" (issue 25): AdamW against SFW's modes, each model compressed one-shot -------------
LEVELS = {"heads_ffn": "heads+FFN ½", "sparse_90": "90 %", "nm_2:4": "2:4", "rank_1/4": "¼ rank",
          "rank_1/8": "⅛ rank"}
DEFAULT_METHODS = [
    "adamw", "adamw:lr=0.001", "adamw:lr=0.01", "sfw:spectral", "sfw:spectral_polytope",
    "sfw:spectral_polytope:k=0.125", "sfw:k_support", "sfw:group_k_support", "sfw:coupled_group_k_support",
    "sfw:spectral_k_support", "sfw:nm_k_support",
    "sfw:k_support:rest=adam", "sfw:k_support:rest=adam,rest_lr=0.01", "sfw:k_support:rest=adam,rest_lr=0.03",
    "sfw:k_support:rest=adam,rest_lr=0.1", "sfw:k_support:rest=outside", "sfw:coupled_group_k_support:rest=adam",
    "sfw:coupled_group_k_support:rest=adam,rest_lr=0.1", "sfw:coupled_group_k_support:rest=outside",
    "ft:sfw:spectral_polytope:fixed_step=0.005", "ft:sfw:spectral_polytope:fixed_step=0.02", "ft:sfw:k_support",
    "ft:sfw:k_support:lr=0.01", "ft:sfw:coupled_group_k_support", "ft:sfw:coupled_group_k_support:lr=0.01",
    "ft:sfw:nm_k_support", "ft:sfw:spectral", "ft:sfw:group_k_support", "ft:sfw:spectral_k_support"]
CHECKPOINTS = H.HERE.parent / "runs" / "bench_transformers"


@dataclasses.dataclass(frozen=True)
class Task:
    model: str
    blocks: str                 # the attribute holding the blocks (Hugging Face's names)
    dataset: str
    epochs: int
    n_train: int
    n_test: int
    batch: int
    language: bool = False      # a language model: scored by validation perplexity


TASKS = {"vit": Task("vit", "layer", "fashion_mnist", 8, 10000, 5000, 128),
         "gpt": Task("gpt", "h", "fortunes", 4, 8000, 2000, 64, language=True)}


def load(task: Task):
    from sparsefw.data import get_datasets
    train, test, info = get_datasets(task.dataset, subset=(task.n_train, task.n_test))
    return (train.images, train.targets.long()), (test.images, test.targets.long()), info


def score(task: Task, model: nn.Module, test, info) -> float:
    """Test accuracy (vit) or validation perplexity (gpt)."""
    metrics = evaluate(model, H.batches(*test, 250), info.task, info.num_classes)
    return metrics["perplexity" if task.language else "accuracy"]


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


def optimizer(method: str, model: nn.Module, example: torch.Tensor) -> torch.optim.Optimizer:
    """AdamW, or SFW over `constrain`'s groups; rest=adam: direction "adam", rest=outside: Adam's step
    only where no compression acts, rest_lr: the length α of those Adam steps."""
    from sparsefw.assign_linear import hidden_linear_weights
    from sparsefw.assign_spectral import OTHER_STEP
    kind, mode, options = parse(method)
    if kind == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=options.get("lr", 3e-3), weight_decay=options.get("wd", 0.05))
    lr, rest, rest_lr = options.pop("lr", 0.1), options.pop("rest", None), options.pop("rest_lr", None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        groups = sparsefw.constrain(model, mode, example_inputs=example, **options,
                                    direction="adam" if rest == "adam" else "auto")
    kept = set(hidden_linear_weights(model)) if rest == "outside" else {g["name"] for g in groups}
    for group in groups:
        if group["name"] not in kept and "+" not in group["name"]:
            group.update(OTHER_STEP)     # Adam for what no compression touches: embeddings, head, biases, norms
        if rest_lr is not None and group.get("direction") == "adam" and group.get("rescale") == "gradient":
            group["lr"] = rest_lr
    return sparsefw.SFW(groups, lr=lr)


def compressed(model: nn.Module, blocks: str, level: str, calibration: torch.Tensor, wanda: bool = False) -> nn.Module:
    """`model` compressed one-shot at `level` (LEVELS); outside its `blocks` (the embeddings, the head)
    it stays dense."""
    from sparsefw.compress import factorize, prune
    if level == "heads_ffn":
        return remove_filters(model, 0.5, calibration[:8], coupled=True)
    small, how = copy.deepcopy(model), ({"pattern": "2:4"} if level == "nm_2:4" else {"sparsity": 0.9})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if level.startswith("rank"):
            rank = 1 / int(level.rpartition("/")[2])
            setattr(small, blocks, factorize(getattr(model, blocks), rank=rank, layers="linear", skip_no_saving=False))
        elif not wanda:
            setattr(small, blocks, prune(getattr(model, blocks), **how))
        else:                  # Wanda needs the whole forward for its activations; the rest is put back
            small = prune(model, criterion="wanda", calibration=[calibration], **how)
            inside = lambda key: key.startswith(blocks + ".")  # noqa: E731
            small.load_state_dict({k: v for k, v in small.state_dict().items() if inside(k)}
                                  | {k: v for k, v in model.state_dict().items() if not inside(k)})
    return small


def scores(task: Task, model: nn.Module, data) -> dict[str, float]:
    """The dense score, every level's (and Wanda's at 90 % and 2:4), and the heads+FFN speed-up."""
    (x, _), test, info = data
    model.eval()
    calibration = x[torch.randperm(len(x), generator=torch.Generator().manual_seed(0))[:512]]
    out = {"dense": score(task, model, test, info)}
    for level in LEVELS:
        small = compressed(model, task.blocks, level, calibration)
        out[level] = score(task, small, test, info)
        if level == "heads_ffn":
            dense_ms, small_ms = sparsefw.compress.measure_latency([model, small], test[0][:128], repeats=20)
            out["heads_ffn_speedup"] = dense_ms / small_ms
        if level in ("sparse_90", "nm_2:4"):
            wanda = compressed(model, task.blocks, level, calibration, wanda=True)
            out[level + ":wanda"] = score(task, wanda, test, info)
    return out


def trained(task: Task, method: str, seed: int, data, cache: Path) -> tuple[nn.Module, float]:
    """A model of `task` trained with `method` from seed `seed`, and its last epoch's loss; AdamW models
    are saved in `cache` and reused by the "ft:" methods."""
    (x, y), _, info = data
    from sparsefw.models import build_model
    model, epochs = build_model(task.model, info.num_classes, info.in_channels, info.image_size, seed=seed), task.epochs
    path = cache / f"{task.model}-adamw-e{epochs}-n{len(x)}-s{seed}.pt"
    if method.startswith("ft:"):
        if not path.exists():
            trained(task, "adamw", seed, data, cache)
        model.load_state_dict(torch.load(path))
        method, epochs = method[3:], max(1, epochs // 4)
    elif method == "adamw" and path.exists():
        model.load_state_dict(torch.load(path))
        return model.eval(), float("nan")
    loss = H.fit(model, optimizer(method, model, x[:64]), x, y, epochs, task.batch, torch.Generator().manual_seed(seed),
                 loss=lambda logits, t: F.cross_entropy(*token_logits(logits, t, info.task)))   # GPT: every token
    if method == "adamw":
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(model.state_dict(), path)
    return model, loss


@functools.cache
def _commit() -> str:
    """The commit checked out when this process first asked (its code; uncommitted changes not marked)."""
    return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                          cwd=H.HERE).stdout.strip()


def training_table(task_name: str, records: list[dict]) -> str:
    """Markdown: per method, mean ± std over seeds of the dense score and of each level's kept share
    (gpt: perplexity ratio to dense)."""
    task, by = TASKS[task_name], {}
    for r in records:
        by.setdefault(r["method"], []).append(r)

    def stat(values, digits=3):
        spread = f" ± {statistics.stdev(values):.{digits}f}" if len(values) > 1 else ""
        return f"{statistics.mean(values):.{digits}f}{spread}"
    header = ["method", "seeds", "dense " + ("perplexity" if task.language else "accuracy"), *LEVELS.values(),
              "speed-up ½", "Wanda 90 % / 2:4", "s/run"]
    rows = []
    for method, rs in by.items():
        kept = {level: stat([r[level] / r["dense"] for r in rs]) for level in LEVELS}
        wanda = " / ".join(stat([r[f"{lv}:wanda"] / r["dense"] for r in rs], 2) for lv in ("sparse_90", "nm_2:4"))
        rows.append([method, len(rs), stat([r["dense"] for r in rs]), *kept.values(),
                     f"{statistics.mean(r['heads_ffn_speedup'] for r in rs):.2f}×", wanda,
                     f"{statistics.mean(r['seconds'] for r in rs):.0f}"])
    return "\n".join(H.table(header, rows))


def training_plot(records: list[dict], methods: list[str], path: Path) -> None:
    """Per task, the kept share (gpt: dense / compressed perplexity) at each level, mean and half range
    over seeds, one bar per method of `methods` found in `records`, the goals dashed (`_tasks.kept_figure`)."""
    import _tasks as T
    s = {(name, m): {"dense": T.mean_spread([r["dense"] for r in rs]), **{
        c: T.mean_spread([(r[lv] / r["dense"]) ** (-1 if task.language else 1) for r in rs]) for lv, c in LEVELS.items()}}
        for name, task in TASKS.items() for m in methods
        if (rs := [r for r in records if r["task"] == name and r["method"] == m])}
    shown = {name: ("dense / compressed perplexity", "perplexity", 1 / 1.1) if task.language else
             ("accuracy kept", "accuracy", 0.95) for name, task in TASKS.items()}  # bars, legend's dense, goal
    T.kept_figure(s, methods, list(LEVELS.values()), path, goals={name: g for name, (_, _, g) in shown.items()},
                  title=lambda name: "{}: {} (legend: dense {}), one-shot".format(name, *shown[name][:2]))


def training(args) -> dict[str, str]:
    log = args.results / "transformers_compress.jsonl"
    if args.quick:
        args.seeds = [0]
        for name, task in TASKS.items():
            TASKS[name] = dataclasses.replace(task, epochs=1, n_train=512, n_test=256)
    cache = args.results / "checkpoints" if args.quick else CHECKPOINTS
    _commit()                  # the commit the records name: the code this process started with
    def one(task: Task, method: str, seed: int, data) -> dict:
        start = time.perf_counter()
        model, loss = trained(task, method, seed, data, cache)
        return dict(n_train=len(data[0][1]), seconds=round(time.perf_counter() - start, 1), loss=round(loss, 4),
                    commit=_commit(), **scores(task, model, data))
    for name in [] if args.report else args.tasks:
        data = load(TASKS[name])
        for seed, method in [(s, m) for s in args.seeds for m in args.methods]:
            H.run_logged(log, dict(task=name, method=method, seed=seed, epochs=TASKS[name].epochs),
                         lambda: one(TASKS[name], method, seed, data))
    records = H.read_jsonl(log)
    parts = []
    for name in TASKS:
        shown = sorted((r for r in records if r["task"] == name and r["method"] in args.methods
                        and r["seed"] in args.seeds and r["epochs"] == TASKS[name].epochs),
                       key=lambda r: args.methods.index(r["method"]))
        if shown:
            parts += ["", f"**{name}** ({TASKS[name].epochs} epochs, {TASKS[name].n_train} samples); "
                      "cells: mean ± std over seeds of the kept share (gpt: perplexity / dense).", "",
                      training_table(name, shown)]
    plotted = ["adamw", "sfw:k_support", "sfw:coupled_group_k_support", "sfw:nm_k_support", "sfw:spectral_polytope",
               "sfw:spectral_polytope:k=0.125"]
    training_plot([r for r in records if r["seed"] in args.seeds], plotted, args.results / "transformers_compress.png")
    return {"transformer_training": H.section("transformer_training", command=args.command, tables=parts)}


def _training_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--methods", nargs="+", default=DEFAULT_METHODS)


VARIANTS = {
    "speed": H.Variant(speed, "heads + FFN units removed vs dense vs native vs Torch-Pruning (section transformers)",
                       lambda p: p.add_argument("--repeats", type=int, default=30,
                                                help="interleaved rounds per shape at batch 8 (8× at batch 1)")),
    "training": H.Variant(training, "AdamW against SFW's modes on a ViT and a character-level GPT, each "
                          "compressed one-shot at five levels (section transformer_training)", _training_arguments,
                          report=True),
}

if __name__ == "__main__":
    warnings.simplefilter("ignore")
    H.main("bench_transformers.py", __doc__, VARIANTS)
