"""Several runs' sweeps side by side: a markdown table (rows: runs; columns: dense and every
compression level) and a plot (one panel per kind, one line per run)."""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from .config import COMPRESSION_KINDS
from .io import save_figure, write_csv, write_json, write_text

log = logging.getLogger("sparsefw")
SWEEP_JSON = "sweep.json"
REPORT_MD, REPORT_CSV, REPORT_JSON, REPORT_PNG = "report.md", "report.csv", "report.json", "report.png"
# Per compression kind: plot title, and the table column of a level (percent) — one entry per COMPRESSION_KINDS.
KIND_TITLES = {"unstructured": "unstructured pruning (sparsity)", "filters": "filter removal (fraction removed)",
               "channels": "coupled channel removal (fraction removed)",
               "lowrank": "low rank (fraction of rank removed)"}
_COLUMNS = {"unstructured": "{} sparse", "filters": "{} filters removed", "channels": "{} channels removed",
            "lowrank": "{} rank removed"}


def _column(kind: str, level: float) -> str:
    return "dense" if kind == "dense" else _COLUMNS[kind].format(f"{100 * level:g}%")


def find_sweeps(paths: list[str | os.PathLike]) -> list[Path]:
    """sweep.json of each path: a run directory, a sweep.json file, or a directory of run directories.

    A path without a sweep (a report folder that `runs/x/*` matches the second time, a stray file) is
    skipped with a note on the `sparsefw` logger; FileNotFoundError only when no sweep is left."""
    found, skipped = [], []
    for path in map(Path, paths):
        if path.is_file() and path.name == SWEEP_JSON:
            found.append(path)
        elif (path / SWEEP_JSON).is_file():
            found.append(path / SWEEP_JSON)
        elif path.is_dir() and sorted(path.glob(f"*/{SWEEP_JSON}")):
            found.extend(sorted(path.glob(f"*/{SWEEP_JSON}")))
        else:
            skipped.append(path)
    if not found:
        where = ", ".join(f"'{p}'" for p in skipped)
        raise FileNotFoundError(f"no {SWEEP_JSON} in {where} or their subdirectories (run `sparsefw sweep` first)")
    for path in skipped:
        log.warning("note: skipped '%s' (no %s in it or its subdirectories)", path, SWEEP_JSON)
    return found


def load_sweeps(paths: list[str | os.PathLike]) -> tuple[list[dict], str]:
    """All rows of the given sweeps and their (common) metric name."""
    rows, metrics = [], set()
    for file in find_sweeps(paths):
        data = json.loads(file.read_text())
        rows.extend(data["rows"])
        metrics.add(data["metric"])
    if len(metrics) > 1:
        raise ValueError(f"the sweeps measure different metrics {sorted(metrics)}; report them separately")
    return rows, metrics.pop()


def markdown_table(rows: list[dict], metric: str) -> str:
    """Rows: runs (in order of appearance); columns: dense, then each kind's levels ascending."""
    runs = list(dict.fromkeys(r["run"] for r in rows))
    columns = [("dense", 0.0)] + sorted({(r["kind"], r["level"]) for r in rows if r["kind"] != "dense"},
                                        key=lambda c: (COMPRESSION_KINDS.index(c[0]), c[1]))
    value = {(r["run"], r["kind"], r["level"]): r[metric] for r in rows}
    head = f"| run ({metric}) | " + " | ".join(_column(*c) for c in columns) + " |"
    lines = [head, "|" + "---|" * (len(columns) + 1)]
    for run in runs:
        cells = [f"{value[(run, *c)]:.3f}" if (run, *c) in value else "–" for c in columns]
        lines.append(f"| {run} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_sweeps(rows: list[dict], metric: str, path: str | os.PathLike) -> Path:
    """Metric vs level removed, one panel per kind present, one line per run (level 0 = dense)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kinds = [k for k in COMPRESSION_KINDS if any(r["kind"] == k for r in rows)]
    runs = list(dict.fromkeys(r["run"] for r in rows))
    fig, axes = plt.subplots(1, max(len(kinds), 1), figsize=(4.5 * max(len(kinds), 1), 3.6), squeeze=False)
    for ax, kind in zip(axes[0], kinds):
        for run in runs:
            dense = [r for r in rows if r["run"] == run and r["kind"] == "dense"]
            pts = sorted((r["level"], r[metric]) for r in rows if r["run"] == run and r["kind"] == kind)
            pts = [(0.0, dense[0][metric])] + pts if dense else pts
            ax.plot([100 * x for x, _ in pts], [y for _, y in pts], marker="o", label=run)
        ax.set_title(KIND_TITLES[kind])
        ax.set_xlabel("% removed")
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    try:
        return save_figure(path, fig)
    finally:
        plt.close(fig)


def write_report(paths: list[str | os.PathLike], out_dir: str | os.PathLike) -> tuple[str, dict[str, Path]]:
    """Merge the sweeps found under `paths`; write report.md/.csv/.json/.png into `out_dir`."""
    rows, metric = load_sweeps(paths)
    table = markdown_table(rows, metric)
    out_dir = Path(out_dir)
    files = {"md": write_text(out_dir / REPORT_MD, f"# Compression sweep ({metric}, no retraining)\n\n{table}\n"),
             "csv": write_csv(out_dir / REPORT_CSV, rows),
             "json": write_json(out_dir / REPORT_JSON, {"metric": metric, "level": "fraction removed", "rows": rows}),
             "png": plot_sweeps(rows, metric, out_dir / REPORT_PNG)}
    return table, files
