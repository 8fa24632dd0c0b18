"""Quality: SparseFW against every baseline on Fashion-MNIST, one-shot compression, no retraining.

    python benchmarks/bench_quality.py grid            (trains, appends to results/quality_runs.jsonl,
                                                        writes the "quality" section + quality_*.png)
    python benchmarks/bench_quality.py grid --report   (section and plot from the JSONL as it stands)
    python benchmarks/bench_quality.py grid --quick    (smoke run into a temporary JSONL, no section)
        --config benchmarks/configs/quality_reference.yaml | quality_resnet20.yaml | quality_paper.yaml
        --methods a,b (train only these; two processes with disjoint lists share the JSONL, two cores)

Protocol: benchmarks/configs/quality.yaml and the section's text (sections/quality.md). Runs already in the
JSONL are skipped (an interrupted run resumes).
"""
from __future__ import annotations

import _harness as H  # first, before torch: it sets OMP_WAIT_POLICY (see its docstring)

import statistics
import time
from pathlib import Path

import torch
import yaml

from _harness import read_jsonl
from sparsefw.compress import count_parameters, recalibrate_batchnorm
from sparsefw.data import get_datasets
from sparsefw.experiments.config import validate
from sparsefw.experiments.evaluation import evaluate
from sparsefw.experiments.optimizers import build_optimizer
from sparsefw.experiments.report import plot_sweeps
from sparsefw.experiments.schedules import LRFactor
from sparsefw.experiments.sweep import compress_model
from sparsefw.models import build_model

CONFIG = H.HERE / "configs" / "quality.yaml"     # configs/NAME.yaml → results/NAME_runs.jsonl, section NAME
KINDS = ("unstructured", "filters", "lowrank")
SPLIT_SEED = 0
DENSE_MARGIN = 0.015    # selection: settings this far below the grid's best dense validation accuracy are out
BASELINES = ("sgd_wd", "sgd_group_lasso", "sgd_nuclear", "prox_sgd_svt", "sfw_l2", "sfw_k_sparse")


def load_data(cfg: dict):
    """(train, val, test) as lists of in-memory tensors; val is a seeded random part of the
    stratified training subset, disjoint from train."""
    d = cfg["data"]
    train, test, info = get_datasets(d["name"], subset=(d["n_train"] + d["n_val"], d["n_test"]))
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(SPLIT_SEED))
    val = train.subset(order[:d["n_val"]])
    train = train.subset(order[d["n_val"]:])
    return train, val, test, info


def train_one(cfg: dict, opt_raw: dict, seed: int, train, info) -> tuple[torch.nn.Module, dict]:
    """Train the small CNN with the optimizer described by `opt_raw`; (model, training stats)."""
    opt_cfg = validate({"optimizer": opt_raw}).optimizer
    m = cfg["model"]
    model = build_model(m.get("name", "cnn"), info.num_classes, info.in_channels, seed=seed, widths=m.get("widths"))
    optimizer, penalty, after_step = build_optimizer(opt_cfg, model)
    b, epochs = cfg["data"]["batch_size"], cfg["training"]["epochs"]
    iters = -(-len(train) // b)
    x, y = train[:]
    t0 = time.perf_counter()
    loss = H.fit(model, optimizer, x, y, epochs, b, torch.Generator().manual_seed(1000 + seed),
                 lr_factor=LRFactor(cfg["training"]["schedule"], epochs * iters, iters),
                 penalty=None if penalty is None else lambda: penalty(model), after_step=after_step)
    return model, {"train_seconds": time.perf_counter() - t0, "final_epoch_train_loss": loss}


def calibration(cfg: dict, train) -> list[torch.Tensor]:
    """Config `bn_recalibration: B`: the first B training batches of a fixed permutation (inputs
    only), the same for every method, seed and level; [] when the key is absent or 0."""
    n, b = cfg.get("bn_recalibration", 0), cfg["data"]["batch_size"]
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(SPLIT_SEED))
    return [train[order[i * b:(i + 1) * b]][0] for i in range(n)]


def sweep_one(model, cfg: dict, val_batches, test_batches, info, with_val: bool,
              calibration_batches: list | None = None) -> list[dict]:
    """Dense and every compression level: test accuracy, stored/nonzero params; validation accuracy
    at the dense model and headline levels (when `with_val`); with `calibration_batches`, also the
    test accuracy after BatchNorm recalibration on them (`test_accuracy_bn`)."""
    example = test_batches[0][0][:1]
    headline = cfg["headline"]
    acc = lambda net, data: evaluate(net, data, "classification", info.num_classes)["accuracy"]  # noqa: E731

    def row(kind, level, net):
        r = {"kind": kind, "level": level, "test_accuracy": acc(net, test_batches),
             "params": count_parameters(net), "nonzero": sum(int(p.count_nonzero()) for p in net.parameters())}
        if with_val and (kind == "dense" or headline.get(kind) == level):
            r["val_accuracy"] = acc(net, val_batches)
        if calibration_batches and kind != "dense":
            r["test_accuracy_bn"] = acc(recalibrate_batchnorm(net, calibration_batches), test_batches)
        return r

    rows = [row("dense", 0.0, model)]
    for kind in KINDS:
        for level in cfg["levels"][kind]:
            small = compress_model(model, kind, level, example, lowrank_layers=cfg.get("lowrank_layers", "all"))
            rows.append(row(kind, level, small.eval()))
    return rows


def selection_score(rows: list[dict]) -> float:
    """Mean validation accuracy over the dense model and the headline levels."""
    vals = [r["val_accuracy"] for r in rows if "val_accuracy" in r]
    return sum(vals) / len(vals)


def dense_val(rows: list[dict]) -> float:
    return next(r["val_accuracy"] for r in rows if r["kind"] == "dense")


def run_all(cfg: dict, jsonl: Path, methods: list[str] | None = None) -> None:
    train, val, test, info = load_data(cfg)
    eb = cfg["data"]["eval_batch_size"]
    val_batches, test_batches = H.batches(*val[:], eb), H.batches(*test[:], eb)
    calib = calibration(cfg, train)
    seeds = cfg["training"]["seeds"]

    def one(method: str, setting: int, seed: int) -> dict:
        spec = cfg["methods"][method]
        opt_raw = {**cfg["base"][spec["base"]], **spec["grid"][setting]}
        model, stats = train_one(cfg, opt_raw, seed, train, info)
        return {"optimizer": opt_raw, **stats, "rows": sweep_one(model, cfg, val_batches, test_batches, info,
                                                                 with_val=seed == seeds[0], calibration_batches=calib)}

    def do(method: str, setting: int, seed: int) -> None:
        H.run_logged(jsonl, {"method": method, "setting": setting, "seed": seed}, lambda: one(method, setting, seed))

    methods = methods or list(cfg["methods"])
    for method in methods:                               # phase 1: every setting, first seed
        for setting in range(len(cfg["methods"][method]["grid"])):
            do(method, setting, seeds[0])
    records = read_jsonl(jsonl)
    for method in methods:                               # phase 2: the selected setting, other seeds
        for seed in seeds[1:]:
            do(method, best_setting(records, method, seeds[0], cfg.get("dense_margin", DENSE_MARGIN)), seed)


def best_setting(records: list[dict], method: str, seed: int, dense_margin: float = DENSE_MARGIN) -> int:
    """The selected setting of `method`: the highest `selection_score` among the settings (runs with
    `seed`) whose dense validation accuracy is at least the grid's best minus `dense_margin`."""
    cands = [r for r in records if r["method"] == method and r["seed"] == seed]
    top = max(dense_val(r["rows"]) for r in cands)
    eligible = [r for r in cands if dense_val(r["rows"]) >= top - dense_margin - 1e-12]
    return max(eligible, key=lambda r: selection_score(r["rows"]))["setting"]


# --- report -----------------------------------------------------------------------------------
def _acc(record: dict, kind: str, level: float, key: str = "test_accuracy") -> float:
    """Test accuracy at (kind, level); key "test_accuracy_bn": after BN recalibration (the dense
    model is never recalibrated)."""
    row = next(r for r in record["rows"] if r["kind"] == kind and abs(r["level"] - level) < 1e-9)
    return row["test_accuracy"] if kind == "dense" else row[key]


def _cell(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ± {(max(values) - min(values)) / 2:.3f}"


def _describe(opt: dict) -> str:
    keys = ("lr", "mode", "k", "width", "bias_and_norm", "norm_radius", "weight_decay", "penalty", "penalty_lambda")
    return ", ".join(f"{k}={opt[k]}" for k in keys if k in opt)


def level_columns(cfg: dict) -> tuple[list[tuple[str, float]], list[str]]:
    """((kind, level) of every column, dense first; their headers)."""
    levels = cfg["levels"]
    cols = [("dense", 0.0)] + [(k, lv) for k in KINDS for lv in levels[k]]
    heads = (["dense"] + [f"{100 * lv:g}% unstr." for lv in levels["unstructured"]]
             + [f"{100 * lv:g}% filters" for lv in levels["filters"]]
             + [f"{100 * (1 - lv):g}% rank kept" for lv in levels["lowrank"]])
    return cols, heads


def accuracy_tables(cfg: dict, records: list[dict], key: str) -> tuple[list[str], dict, list[list]]:
    """Of accuracy `key`: (the selected settings' table, their means per method and column, one row per
    setting of the first seed: method, setting, accuracy per column)."""
    cols, heads = level_columns(cfg)
    seed0 = cfg["training"]["seeds"][0]
    margin = cfg.get("dense_margin", DENSE_MARGIN)
    selected = {m: [r for r in records if r["method"] == m and r["setting"] == best_setting(records, m, seed0, margin)]
                for m in cfg["methods"] if any(r["method"] == m and r["seed"] == seed0 for r in records)}
    accs = {m: {c: [_acc(r, *c, key=key) for r in runs] for c in cols} for m, runs in selected.items()}
    table = H.table(["method (selected setting)", "seeds", *heads],
                    [[f"{m} ({_describe(runs[0]['optimizer'])})", len(runs), *(_cell(accs[m][c]) for c in cols)]
                     for m, runs in selected.items()])
    every = [[r["method"], _describe(r["optimizer"]), *(f"{_acc(r, *c, key=key):.3f}" for c in cols)]
             for r in first_seed_runs(cfg, records)]
    return table, {m: {c: statistics.mean(v) for c, v in a.items()} for m, a in accs.items()}, every


def first_seed_runs(cfg: dict, records: list[dict]) -> list[dict]:
    """The runs of the first seed, in the config's method order, then by setting."""
    order = {m: i for i, m in enumerate(cfg["methods"])}
    return [r for r in sorted(records, key=lambda r: (order.get(r["method"], len(order)), r["setting"]))
            if r["seed"] == cfg["training"]["seeds"][0]]


def recalibration_text(cfg: dict, records: list[dict]) -> list[str]:
    """The tables of the same models after BatchNorm recalibration."""
    table, summary, every = accuracy_tables(cfg, records, "test_accuracy_bn")
    return ["", H.section("quality_recalibration", n=cfg["bn_recalibration"], batch=cfg["data"]["batch_size"],
                          table=table, goals=goals(summary, heading="#### Goals of the issue after recalibration"),
                          every=H.table(["method", "setting", *level_columns(cfg)[1]], every))]


def report(cfg: dict, name: str, jsonl: Path, command: str, elapsed: str, png_path: Path) -> str:
    """The markdown section of the runs recorded in `jsonl` (config `name`)."""
    records = read_jsonl(jsonl)
    recal = cfg.get("bn_recalibration", 0) and all("test_accuracy_bn" in r["rows"][-1] for r in records)
    lines, summary, every = accuracy_tables(cfg, records, "test_accuracy")
    all_lines = H.table(["method", "setting", "final train loss", "validation score", *level_columns(cfg)[1]],
                        [[*row[:2], f"{r['final_epoch_train_loss']:.3f}", f"{selection_score(r['rows']):.3f}", *row[2:]]
                         for row, r in zip(every, first_seed_runs(cfg, records))])
    plot_rows = [{"run": m, "kind": k, "level": lv, "accuracy": v} for m, by in summary.items() for (k, lv), v in by.items()]
    png = plot_sweeps(plot_rows, "accuracy", png_path) if plot_rows else None
    tradeoff = plot_tradeoff(cfg, records, png_path.with_name(png_path.stem + "_tradeoff.png")) if records else None
    rest = [f"![accuracy against compression level](benchmarks/results/{png.name})", ""] if png else []
    if tradeoff:
        rest += ["Trade-off of every setting (first seed): dense accuracy against accuracy at the headline levels "
                 "(filled: SparseFW regions, hollow squares: baselines; the dashed diagonal is 'no loss').", "",
                 f"![dense accuracy against compressed accuracy](benchmarks/results/{tradeoff.name})", ""]
    rest += goals(summary) + (recalibration_text(cfg, records) if recal else [])
    if cfg.get("reference"):
        rest += ["", *reference_table(cfg["reference"], summary)]
    if cfg.get("notes"):
        rest += ["", "### Reading", "", *cfg["notes"]]
    seeds, sizes = cfg["training"]["seeds"], sorted({len(m["grid"]) for m in cfg["methods"].values()})
    return H.section(
        "quality", title=cfg.get("title", "Quality: SparseFW against the baselines"), command=command, elapsed=elapsed,
        d=cfg["data"], t=cfg["training"], model=_describe_model(cfg["model"]), name=name, seed=seeds[0],
        recal=" (but see the last table)" if recal else "", margin=100 * cfg.get("dense_margin", DENSE_MARGIN),
        lowrank="conv (the classifier stays dense, as in the paper's code)." if cfg.get("lowrank_layers") == "conv"
        else "conv/linear.", n_settings=str(sizes[0]) if len(sizes) == 1 else f"{sizes[0]}–{sizes[-1]}",
        rerun=f"is rerun with seed(s) {seeds[1:]}. " if seeds[1:] else "is reported (one seed only). ",
        selected=lines, every=all_lines, rest=rest)


def plot_tradeoff(cfg: dict, records: list[dict], path: Path) -> Path:
    """Every setting (first seed): dense test accuracy (x) against test accuracy at each headline
    level (y), one panel per kind, SparseFW filled, baselines hollow; the diagonal is 'no loss'."""
    plt = H.pyplot()
    seed0 = cfg["training"]["seeds"][0]
    methods = list(cfg["methods"])
    colours = plt.get_cmap("tab10")
    fig, axes = plt.subplots(1, len(KINDS), figsize=(5 * len(KINDS), 4.2), squeeze=False)
    for ax, kind in zip(axes[0], KINDS):
        level = cfg["headline"][kind]
        for i, method in enumerate(methods):
            runs = [r for r in records if r["method"] == method and r["seed"] == seed0]
            if not runs:
                continue
            xs = [_acc(r, "dense", 0.0) for r in runs]
            ys = [_acc(r, kind, level) for r in runs]
            filled = method not in BASELINES
            ax.scatter(xs, ys, s=40, color=colours(i), label=method, marker="o" if filled else "s",
                       facecolors=colours(i) if filled else "none")
        lo = min(0.5, ax.get_xlim()[0])
        ax.plot([lo, 1], [lo, 1], color="grey", lw=0.8, ls="--")
        ax.set_xlim(left=max(lo, ax.get_xlim()[0]))
        title = {"unstructured": f"{100 * level:g}% unstructured sparsity",
                 "filters": f"{100 * level:g}% filters removed",
                 "lowrank": f"{100 * (1 - level):g}% rank kept"}[kind]
        ax.set(title=title, xlabel="dense test accuracy", ylabel="test accuracy after one-shot compression")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    return H.save_plot(fig, path)


def _describe_model(model: dict) -> str:
    name = model.get("name", "cnn")
    return f"{name} widths {model['widths']}" if model.get("widths") else name


def reference_table(reference: dict, summary: dict) -> list[str]:
    """Our selected settings next to the reference numbers of the config
    (docs/method.md#reference-results), on the cells both have; the better of each pair in bold."""
    cells = [("dense", 0.0)] + sorted({(k, float(lv)) for ref in reference.values()
                                       for k in KINDS for lv in ref.get(k, {})}, key=lambda c: (KINDS.index(c[0]), c[1]))
    name = {"dense": lambda lv: "dense", "unstructured": lambda lv: f"{100 * lv:g}% unstr.",
            "filters": lambda lv: f"{100 * lv:g}% filters", "lowrank": lambda lv: f"{100 * lv:g}% rank removed"}
    fmt = lambda a, b: f"**{a:.3f}**" if a > b else f"{a:.3f}"  # noqa: E731
    rows = []
    for method, ref in reference.items():
        if method in summary:
            theirs = [ref["dense"] if k == "dense" else ref[k][lv] for k, lv in cells]
            ours = [summary[method][(k, lv)] for k, lv in cells]
            rows += [[method, "paper's", *map(fmt, theirs, ours)], [method, "sparsefw", *map(fmt, ours, theirs)]]
    return ["### Against the paper's code in this setting ([docs/method.md](docs/method.md#reference-results))", "",
            *H.table(["method", "code", *(name[k](lv) for k, lv in cells)], rows)]


def goals(summary: dict, heading: str = "### Goals of the issue (means of the selected settings)") -> list[str]:
    """The issue's goals, checked against the means of the selected settings."""
    if "sgd_wd" not in summary:
        return []
    sgd = summary["sgd_wd"][("dense", 0.0)]
    checks = {"sfw_k_support": ("unstructured", 0.9, 0.98), "sfw_group_k_support": ("filters", 0.5, 0.95),
              "sfw_spectral_k_support": ("lowrank", 0.75, 0.95)}
    out = [heading, ""]
    for method, (kind, level, keep) in checks.items():
        if method not in summary:
            continue
        s = summary[method]
        dense, comp = s[("dense", 0.0)], s[(kind, level)]
        rivals = {m: v[(kind, level)] for m, v in summary.items() if m in BASELINES}
        top = max(rivals, key=rivals.get) if rivals else None
        out.append(f"- {method}: dense {dense:.3f} vs SGD {sgd:.3f} "
                   f"({'within' if sgd - dense <= 0.01 else 'NOT within'} 1 point); at {kind} {level:g} keeps "
                   f"{comp / dense:.1%} of its dense accuracy (goal ≥ {keep:.0%}: "
                   f"{'met' if comp / dense >= keep else 'NOT met'}); best baseline there: "
                   + (f"{top} {rivals[top]:.3f} ({'SparseFW at or above' if comp >= rivals[top] else 'SparseFW below'})"
                      if top else "none yet"))
    return out


def load_config(path: Path, quick: bool) -> dict:
    """The YAML config; `quick`: 256 / 128 / 128 images and one epoch."""
    cfg = yaml.safe_load(path.read_text())
    if quick:
        cfg["data"].update(n_train=256, n_val=128, n_test=128)
        cfg["training"]["epochs"] = 1
    return cfg


def grid(args) -> dict[str, str]:
    cfg, name = load_config(args.config, args.quick), args.config.stem
    command = "python benchmarks/bench_quality.py grid" + (" --quick" if args.quick else "") + (
        f" --config benchmarks/configs/{args.config.name}" if args.config.resolve() != CONFIG else "")
    jsonl, t0 = args.results / f"{name}_runs.jsonl", time.perf_counter()
    methods = args.methods.split(",") if args.methods else None
    unknown = sorted(set(methods or []) - set(cfg["methods"]))
    if unknown:
        raise SystemExit(f"--methods: not in {args.config.name}: {unknown}")
    if not args.report:
        run_all(cfg, jsonl, methods)
    elapsed = (f"{sum(r['train_seconds'] for r in read_jsonl(jsonl)) / 60:.0f} min of training in all" if args.report
               else f"{(time.perf_counter() - t0) / 60:.0f} min")
    return {name: report(cfg, name, jsonl, command, elapsed, args.results / f"{name}_accuracy.png")}


def grid_arguments(parser) -> None:
    parser.add_argument("--config", type=Path, default=CONFIG)
    parser.add_argument("--methods", help="comma-separated subset to train (run two processes with disjoint subsets "
                                          "to use two cores; they append to the same JSONL); the section covers all")


VARIANTS = {
    "grid": H.Variant(grid, "every method's grid, selection, compression (section named after the config)",
                      grid_arguments, report=True),
}

if __name__ == "__main__":
    H.main("bench_quality.py", __doc__, VARIANTS)
