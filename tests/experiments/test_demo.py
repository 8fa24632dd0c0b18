"""The demo's comparison: each SparseFW mode beside SGD at its own compression, in sentences made
from the numbers, and a plot that names the data, says "no retraining" and draws chance."""
import matplotlib.pyplot as plt

from sparsefw.assign import MODES
from sparsefw.experiments.config import COMPRESSION_KINDS, validate
from sparsefw.experiments.demo import TRAINED_FOR, Comparison, comparison_figure, comparisons, verdict


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
