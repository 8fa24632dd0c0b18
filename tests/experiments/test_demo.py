"""The demo's comparison: each SparseFW mode beside SGD at its own compression, in sentences made
from the numbers, and a plot that names the data, says "no retraining" and draws chance."""
import dataclasses

import matplotlib.pyplot as plt

from sparsefw.assign import MODES
from sparsefw.experiments.config import COMPRESSION_KINDS, validate
from sparsefw.experiments.demo import (KEPT, TRAINED_FOR, Comparison, comparison_figure, comparison_table,
                                      comparisons, verdict)


def test_verdict_reads_every_case_from_the_numbers():
    c = Comparison("sfw_k_support", "sgd", "unstructured", "accuracy", 0.1,
                   [(0.0, 0.95, 0.97), (0.5, 0.94, 0.90), (0.7, 0.93, 0.80), (0.8, 0.60, 0.70),
                    (0.85, 0.50, 0.505), (0.9, 0.14, 0.11)])
    assert verdict(c) == ("Unstructured pruning, sfw_k_support vs sgd: dense 0.950 vs 0.970; sfw_k_support kept "
                          "more accuracy at 50 %, 70 % sparsity (largest lead 0.930 vs 0.800 at 70 %); sgd kept more "
                          "at 80 % (0.700 vs 0.600 at 80 %); even (within 0.01) at 85 %; both near chance (0.10) at "
                          "90 %.")
    behind = Comparison("sfw_group_k_support", "sgd", "filters", "accuracy", 0.1,
                        [(0.0, 0.9, 0.9), (0.3, 0.5, 0.8)])
    assert "sfw_group_k_support was ahead at no level; sgd kept more at 30 % (0.800 vs 0.500" in verdict(behind)


def test_each_mode_is_compared_at_the_kind_it_was_trained_for():
    assert set(TRAINED_FOR) <= set(MODES) and set(TRAINED_FOR.values()) == set(COMPRESSION_KINDS)
    configs = {"sgd": validate({"optimizer": {"name": "sgd"}}),
               "gk": validate({"optimizer": {"mode": "group_k_support"}}),
               "ck": validate({"optimizer": {"mode": "coupled_group_k_support"}}),   # channels not swept
               "l2": validate({"optimizer": {"mode": "l2"}})}              # targets no kind: not compared
    rows = {run: [{"kind": "dense", "level": 0.0, "accuracy": base},
                  {"kind": "filters", "level": 0.5, "accuracy": base - 0.1},
                  {"kind": "unstructured", "level": 0.5, "accuracy": base - 0.2}]
            for run, base in [("sgd", 0.9), ("gk", 0.8), ("ck", 0.75), ("l2", 0.7)]}
    [c] = comparisons(rows, configs, "accuracy", 0.1)
    assert (c.sfw, c.sgd, c.kind) == ("gk", "sgd", "filters")
    assert c.points == [(0.0, 0.8, 0.9), (0.5, 0.8 - 0.1, 0.9 - 0.1)]
    fig = comparison_figure([c], "mnist5k (4000 training / 1000 test images)")
    try:
        title = fig._suptitle.get_text()
        assert "mnist5k (4000 training / 1000 test images)" in title and "no retraining" in title
        [ax] = fig.axes
        chance = [line for line in ax.get_lines() if set(line.get_ydata()) == {0.1}]
        assert len(chance) == 1 and "chance" in chance[0].get_label()
        assert [line.get_label() for line in ax.get_lines()][:2] == ["gk (SparseFW)", "sgd (baseline)"]
    finally:
        plt.close(fig)


def test_coupled_group_k_support_is_compared_under_coupled_channel_removal():
    configs = {"sgd": validate({"optimizer": {"name": "sgd"}}),
               "ck": validate({"optimizer": {"mode": "coupled_group_k_support"}})}
    rows = {run: [{"kind": "dense", "level": 0.0, "accuracy": base},
                  {"kind": "filters", "level": 0.5, "accuracy": base - 0.3},
                  {"kind": "channels", "level": 0.5, "accuracy": base - shrink}]
            for run, base, shrink in [("sgd", 0.9, 0.5), ("ck", 0.85, 0.05)]}
    [c] = comparisons(rows, configs, "accuracy", 0.1)
    assert c.kind == "channels" and c.points == [(0.0, 0.85, 0.9), (0.5, 0.85 - 0.05, 0.9 - 0.5)]
    assert verdict(c).startswith("Coupled channel removal, ck vs sgd: dense 0.850 vs 0.900; ck kept more "
                                 "accuracy at 50 % of channels removed")


def test_speed_clause_quotes_the_largest_level_that_keeps_most_of_dense():
    """The clause quotes the largest level where SparseFW keeps ≥ KEPT of its dense accuracy, else the
    least removal; the speed-up is dense ms / that level's ms (SparseFW's own timings), "slower" below 1."""
    timing = "batch 250, 2 threads, median of 20 interleaved rounds"
    c = Comparison("ck", "sgd", "channels", "accuracy", 0.1,
                   [(0.0, 0.90, 0.95), (0.3, 0.89, 0.60), (0.5, 0.82, 0.30), (0.7, 0.50, 0.11)],
                   [(12.0, 13.0), (9.0, 9.5), (6.0, 6.1), (4.0, 4.2)], timing)
    assert KEPT == 0.9 and verdict(c).endswith(
        "; at 50 % of channels removed ck keeps 91 % of its dense accuracy (0.820 vs 0.300 for sgd) and runs "
        "2.00× faster than dense (6.0 vs 12.0 ms, measured: batch 250, 2 threads, median of 20 interleaved rounds).")
    worse = Comparison("ck", "sgd", "channels", "accuracy", 0.1,
                       [(0.0, 0.9, 0.9), (0.3, 0.12, 0.11), (0.5, 0.1, 0.1)],
                       [(5.0, 5.0), (6.0, 5.5), (3.0, 3.0)], timing)
    assert ("at 30 % of channels removed ck keeps 13 % of its dense accuracy (0.120 vs 0.110 for sgd, both near "
            "chance) and runs 1.20× slower than dense (6.0 vs 5.0 ms" in verdict(worse))
    assert "faster" not in verdict(dataclasses.replace(c, latency=None))               # untimed: no clause


def test_a_pair_is_timed_only_where_every_row_of_both_runs_carries_latency():
    configs = {"sgd": validate({"optimizer": {"name": "sgd"}}),
               "ck": validate({"optimizer": {"mode": "coupled_group_k_support"}})}
    setting = {"latency_batch": 250, "latency_threads": 1, "latency_rounds": 20}
    rows = {run: [{"kind": "dense", "level": 0.0, "accuracy": 0.9, "latency_ms": 10.0 + off, **setting},
                  {"kind": "channels", "level": 0.5, "accuracy": 0.8, "latency_ms": 5.0 + off, **setting}]
            for run, off in [("sgd", 1.0), ("ck", 0.0)]}
    [c] = comparisons(rows, configs, "accuracy", 0.1)
    assert c.latency == [(10.0, 11.0), (5.0, 6.0)]
    assert c.timing == "batch 250, 1 thread, median of 20 interleaved rounds"
    assert comparison_table(c).splitlines()[2:] == ["| dense | 0.900 | 0.900 | 10.0 | 11.0 |",
                                                    "| 50 % | 0.800 | 0.800 | 5.0 | 6.0 |"]
    del rows["sgd"][1]["latency_ms"]
    [untimed] = comparisons(rows, configs, "accuracy", 0.1)
    assert untimed.latency is None and untimed.timing == ""
    assert comparison_table(untimed).splitlines()[0] == "| coupled channel removal (fraction removed) | ck | sgd |"
    fig = comparison_figure([untimed, c], "digits")
    try:
        plain, timed = fig.axes
        assert plain.get_xlabel() == "% removed (0 = dense)" and timed.get_xlabel().startswith("measured latency, ms")
        assert [list(line.get_xdata()) for line in timed.get_lines()[:4]] == [[10.0, 5.0], [10.0], [11.0, 6.0], [11.0]]
        assert [line.get_marker() for line in timed.get_lines()[1:4:2]] == ["*", "*"]          # dense starred
        assert [t.get_text() for t in timed.texts] == ["dense", "50 %"] * 2
    finally:
        plt.close(fig)
