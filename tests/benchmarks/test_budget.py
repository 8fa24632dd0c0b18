"""House rule (docs/design.md#conventions): at most 9 maintained benchmark scripts and 2,800 lines of
benchmark Python (the scripts, the harness and the shared tasks), so that a new measurement retires
or shares code instead of adding a script's worth of its own."""
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
MAX_SCRIPTS, MAX_LINES = 9, 2800


def test_the_benchmarks_keep_their_budget():
    scripts = sorted(BENCHMARKS.glob("bench_*.py"))
    lines = {path.name: len(path.read_text().splitlines()) for path in BENCHMARKS.glob("*.py")}
    assert len(scripts) <= MAX_SCRIPTS, f"{len(scripts)} benchmark scripts: {[p.name for p in scripts]}"
    assert sum(lines.values()) <= MAX_LINES, f"{sum(lines.values())} lines of benchmark Python: {lines}"
