"""`sparsefw demo`: SparseFW (k-support, group-k-support, coupled-group-k-support, spectral-k-support)
and SGD with weight decay on the built-in MNIST digits, every model compressed at every level, no
retraining.

Each SparseFW mode is shown beside SGD at the compression it was trained for (`TRAINED_FOR`:
k-support → unstructured pruning, group-k-support → filter removal, coupled-group-k-support →
coupled channel removal, spectral-k-support → low rank),
with one sentence per pair generated from the run's own numbers (`verdict`); where the sweep rows
carry measured latency (the demo times coupled channel removal: `sweep.latency`), the sentence also
says how much faster the compressed model ran and how much of its accuracy it kept, and the plot
shows accuracy against latency. demo.md and demo.png hold them, report.{md,csv,json,png} every run
at every level.

Uses the packaged config `demo.yaml`. Runs already in the output directory with the same settings
are continued (finished ones are not retrained, their sweeps not redone), so running the demo twice
reprints the result;
other settings there are refused (choose another --out), and `resume=True` continues the runs there
with the settings they were started with.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from .checkpoint import checkpoint_path
from .config import ConfigError, differing_keys, read_config_file, to_dict, validate
from .evaluation import primary_metric
from .io import save_figure, write_text
from .report import KIND_TITLES, SWEEP_JSON, write_report
from .runs import plan_runs
from .sweep import sweep_run, unaugmented_splits
from .train import CONFIG_YAML, train

DEMO_MD, DEMO_PNG = "demo.md", "demo.png"
TRAINED_FOR = {"k_support": "unstructured", "k_sparse": "unstructured", "group_k_support": "filters",
               "coupled_group_k_support": "channels", "spectral_k_support": "lowrank", "nuclear": "lowrank"}
TIE = 0.01                # accuracies closer than this are reported as even
NEAR_CHANCE = 1.5         # both models at most 1.5 × chance accuracy: "near chance", no winner
KEPT = 0.9                # the speed clause quotes the largest level where SparseFW keeps this share of dense
_LEVEL_WORDS = {"unstructured": "sparsity", "filters": "of filters removed", "channels": "of channels removed",
                "lowrank": "of rank removed"}


@dataclass(frozen=True)
class Comparison:
    """One SparseFW run beside the SGD baseline at the kind it was trained for; `points` are
    (level removed, SparseFW metric, SGD metric), dense (level 0) first; `latency` the (SparseFW,
    SGD) median milliseconds at the same points when both runs' rows were timed, `timing` how."""
    sfw: str
    sgd: str
    kind: str
    metric: str
    chance: float | None
    points: list[tuple[float, float, float]]
    latency: list[tuple[float, float]] | None = None
    timing: str = ""


def _levels(levels: list[float]) -> str:
    return ", ".join(f"{100 * x:g} %" for x in levels)


def verdict(c: Comparison) -> str:
    """One sentence from the numbers: where SparseFW is ahead, where SGD is, where they are even
    (within TIE) and where both are near chance (at most NEAR_CHANCE × chance); for a timed pair, the
    speed clause (`_speed`)."""
    (_, dense_sfw, dense_sgd), *levels = c.points
    chance = [(x, a, b) for x, a, b in levels if _near_chance(c, a, b)]
    rest = [p for p in levels if p not in chance]
    ahead = [p for p in rest if p[1] - p[2] >= TIE]
    behind = [p for p in rest if p[2] - p[1] >= TIE]
    even = [p for p in rest if p not in ahead and p not in behind]
    words = _LEVEL_WORDS[c.kind]
    parts = [f"dense {dense_sfw:.3f} vs {dense_sgd:.3f}"]
    if ahead:
        x, a, b = max(ahead, key=lambda p: p[1] - p[2])
        parts.append(f"{c.sfw} kept more {c.metric} at {_levels([p[0] for p in ahead])} {words} "
                     f"(largest lead {a:.3f} vs {b:.3f} at {100 * x:g} %)")
    else:
        parts.append(f"{c.sfw} was ahead at no level")
    if behind:
        x, a, b = max(behind, key=lambda p: p[2] - p[1])
        parts.append(f"{c.sgd} kept more at {_levels([p[0] for p in behind])} ({b:.3f} vs {a:.3f} at {100 * x:g} %)")
    if even:
        parts.append(f"even (within {TIE}) at {_levels([p[0] for p in even])}")
    if chance:
        parts.append(f"both near chance ({c.chance:.2f}) at {_levels([p[0] for p in chance])}")
    if c.latency:
        parts.append(_speed(c))
    return f"{KIND_TITLES[c.kind].split(' (')[0].capitalize()}, {c.sfw} vs {c.sgd}: " + "; ".join(parts) + "."


def _near_chance(c: Comparison, *values: float) -> bool:
    return c.chance is not None and max(values) <= NEAR_CHANCE * c.chance


def _speed(c: Comparison) -> str:
    """At the largest level where SparseFW keeps at least KEPT of its dense metric (else the least
    removal): the share it kept, SGD's value there and the measured speed-up of its compressed model."""
    dense, dense_ms = c.points[0][1], c.latency[0][0]
    kept = [i for i, (_, a, _) in enumerate(c.points) if i and a >= KEPT * dense]
    i = kept[-1] if kept else 1
    (x, a, b), ms = c.points[i], c.latency[i][0]
    speed = f"{dense_ms / ms:.2f}× faster" if ms <= dense_ms else f"{ms / dense_ms:.2f}× slower"
    near = ", both near chance" if _near_chance(c, a, b) else ""
    return (f"at {100 * x:g} % {_LEVEL_WORDS[c.kind]} {c.sfw} keeps {100 * a / dense:.0f} % of its dense "
            f"{c.metric} ({a:.3f} vs {b:.3f} for {c.sgd}{near}) and runs {speed} than dense ({ms:.1f} vs "
            f"{dense_ms:.1f} ms, measured: {c.timing})")


def _timing(row: dict) -> str:
    threads = row["latency_threads"]
    return (f"batch {row['latency_batch']}, {threads} thread{'s' * (threads != 1)}, median of "
            f"{row['latency_rounds']} interleaved rounds")


def comparisons(rows_by_run: dict[str, list[dict]], configs: dict, metric: str,
                chance: float | None) -> list[Comparison]:
    """Every SparseFW run whose mode targets a compression kind swept in both runs, beside the first
    SGD run; with latency where every row of the pair carries it."""
    sgd = next((name for name, cfg in configs.items() if cfg.optimizer.name == "sgd"), None)
    if sgd is None:
        return []
    out = []
    for name, cfg in configs.items():
        kind = TRAINED_FOR.get(cfg.optimizer.mode) if cfg.optimizer.name == "sfw" else None
        if kind is None:
            continue
        at = {run: {(r["kind"], r["level"]): r for r in rows_by_run[run]} for run in (name, sgd)}
        levels = [0.0] + sorted(level for k, level in at[name] if k == kind and (k, level) in at[sgd])
        if len(levels) == 1:        # that kind was not swept (sweep.channels is empty by default)
            continue
        pairs = [(at[name][key], at[sgd][key]) for key in [("dense", 0.0)] + [(kind, x) for x in levels[1:]]]
        timed = all("latency_ms" in r for pair in pairs for r in pair)
        out.append(Comparison(name, sgd, kind, metric, chance,
                              [(x, a[metric], b[metric]) for x, (a, b) in zip(levels, pairs)],
                              [(a["latency_ms"], b["latency_ms"]) for a, b in pairs] if timed else None,
                              _timing(pairs[0][0]) if timed else ""))
    return out


def comparison_table(c: Comparison) -> str:
    """The pair's metric at every level, and its measured milliseconds when timed."""
    ms = c.latency or [()] * len(c.points)
    head = [KIND_TITLES[c.kind], c.sfw, c.sgd] + ([f"{c.sfw} ms", f"{c.sgd} ms"] if c.latency else [])
    lines = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    for (x, a, b), t in zip(c.points, ms):
        cells = ["dense" if x == 0 else f"{100 * x:g} %", f"{a:.3f}", f"{b:.3f}", *(f"{v:.1f}" for v in t)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _latency_panel(ax, c: Comparison) -> None:
    """Metric vs measured milliseconds from 0, each point labelled by its level (SparseFW's above,
    SGD's below), dense starred."""
    for side, (run, role, marker, color) in enumerate([(c.sfw, "SparseFW", "o", "C0"),
                                                       (c.sgd, "baseline", "s", "gray")]):
        ms, ys = [t[side] for t in c.latency], [p[1 + side] for p in c.points]
        ax.plot(ms, ys, marker=marker, color=color, label=f"{run} ({role})")
        ax.plot(ms[:1], ys[:1], marker="*", markersize=14, color=color, linestyle="none")
        for (x, *_), t, y in zip(c.points, ms, ys):
            ax.annotate("dense" if x == 0 else f"{100 * x:g} %", (t, y), textcoords="offset points",
                        xytext=(-8, 6 if side == 0 else -12), fontsize=7, color=color)
    ax.set_xlim(0, 1.1 * max(max(t) for t in c.latency))
    ax.set_title(f"{KIND_TITLES[c.kind].split(' (')[0]}: {c.metric} vs latency", fontsize=10)
    ax.set_xlabel(f"measured latency, ms ({c.timing})", fontsize=8)


def comparison_figure(comps: list[Comparison], data: str):
    """One panel per pair, SparseFW and SGD with a chance line: metric vs % removed (0 = dense), or,
    for a timed pair, metric vs measured latency; the title names the data and says there was no
    retraining. A matplotlib Figure (close it)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, max(len(comps), 1), figsize=(4.5 * max(len(comps), 1), 3.8), squeeze=False)
    for ax, c in zip(axes[0], comps):
        if c.latency:
            _latency_panel(ax, c)
        else:
            xs = [100 * x for x, _, _ in c.points]
            ax.plot(xs, [a for _, a, _ in c.points], marker="o", label=f"{c.sfw} (SparseFW)")
            ax.plot(xs, [b for _, _, b in c.points], marker="s", color="gray", label=f"{c.sgd} (baseline)")
            ax.set_title(KIND_TITLES[c.kind], fontsize=10)
            ax.set_xlabel("% removed (0 = dense)")
        if c.chance is not None:
            ax.axhline(c.chance, color="black", linestyle=":", linewidth=1, label=f"chance ({c.chance:.2f})")
        ax.set_ylabel(f"test {c.metric}")
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"{data}: test {comps[0].metric if comps else 'metric'} after one-shot compression, no retraining",
                 fontsize=11)
    fig.tight_layout()
    return fig


def _plans(out: Path, overrides: list[str], resume: bool):
    """The demo's runs; refuses runs in `out` trained with other settings (unless `resume`)."""
    if resume:
        if overrides:
            raise ConfigError("--resume continues the demo in --out with the settings it was started with; "
                              "drop --set, or choose another --out for the new settings")
        return plan_runs(None, [], out=out, resume=True)
    plans = plan_runs("demo", overrides, out=out, resume=True)
    for plan in plans:
        if plan.resume and (plan.out_dir / CONFIG_YAML).is_file():
            saved = to_dict(validate(read_config_file(plan.out_dir / CONFIG_YAML)))
            keys = sorted(differing_keys(saved, to_dict(plan.config)))
            if keys:
                raise ConfigError(f"'{out}' already holds a demo run with other settings ({plan.out_dir.name} "
                                  f"differs at {', '.join(keys)}): pass another --out to run these settings, or "
                                  f"--resume (without --set) to continue that demo with its own")
    return plans


def _swept(run_dir: Path, progress: bool) -> list[dict]:
    """The run's sweep rows: those of its sweep.json if written after its checkpoint (the sweep is a
    function of the checkpoint and its config), else a new sweep."""
    sweep, checkpoint = run_dir / SWEEP_JSON, checkpoint_path(run_dir)
    if sweep.is_file() and sweep.stat().st_mtime_ns >= checkpoint.stat().st_mtime_ns:
        return json.loads(sweep.read_text())["rows"]
    return sweep_run(run_dir, progress=progress)[0]


def run_demo(out: str | Path = "runs/demo", overrides: list[str] = (), progress: bool = True,
             resume: bool = False) -> dict:
    """Train, sweep and report. Returns {"table" (every run at every level), "comparisons",
    "sentences", "data" (what was trained and tested on), "files", "runs", "seconds"}."""
    start = time.perf_counter()
    out = Path(out)
    plans = _plans(out, list(overrides), resume)
    for plan in plans:
        train(plan.config, plan.out_dir, resume=plan.resume)
    rows_by_run, configs = {}, {}
    for plan in plans:
        rows_by_run[plan.config.name] = _swept(plan.out_dir, progress)
        configs[plan.config.name] = plan.config
    table, files = write_report([p.out_dir for p in plans], out)
    cfg = plans[0].config
    train_ds, test_ds, info = unaugmented_splits(cfg)
    data = f"{info.name} ({len(train_ds)} training / {len(test_ds)} test images)"
    metric = primary_metric(info.task)
    chance = 1.0 / info.num_classes if metric == "accuracy" else None
    comps = comparisons(rows_by_run, configs, metric, chance)
    sentences = [verdict(c) for c in comps]
    body = "\n\n".join(f"{comparison_table(c)}\n\n{s}" for c, s in zip(comps, sentences))
    files["demo_md"] = write_text(out / DEMO_MD, f"# Each SparseFW mode beside SGD at the compression it was "
                                                 f"trained for\n\n{data}; one-shot compression, no retraining.\n\n"
                                                 f"{body}\n")
    fig = comparison_figure(comps, data)
    try:
        files["demo_png"] = save_figure(out / DEMO_PNG, fig)
    finally:
        import matplotlib.pyplot as plt
        plt.close(fig)
    return {"table": table, "comparisons": comps, "sentences": sentences, "data": data, "files": files,
            "runs": [p.out_dir for p in plans], "seconds": time.perf_counter() - start}
