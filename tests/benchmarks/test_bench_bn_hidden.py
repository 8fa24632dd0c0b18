"""bench_quality bn-hidden's measurement on a hand-built CNN: which filters count as shrunken and whose γ is
averaged, against values set by hand."""
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import _tasks as T  # noqa: E402
import bench_quality as bh  # noqa: E402
from sparsefw.models import build_model  # noqa: E402


def test_shrunken_filters_and_their_gamma_match_hand_set_values():
    model = build_model("cnn", 10, 1, seed=0, widths=[4, 4, 8, 8])
    pairs = T.conv_bn_pairs(model)
    assert [c.out_channels for c, _ in pairs] == [4, 4, 8, 8]
    assert all(bn.num_features == conv.out_channels for conv, bn in pairs)
    conv, bn = pairs[1]
    with torch.no_grad():
        conv.weight.fill_(1.0)
        conv.weight[[0, 2]] *= 0.05            # two filters at 5% of the largest norm
        conv.weight[3] *= 0.2                  # 20%: not shrunken
        bn.weight.copy_(torch.tensor([0.4, -1.0, 0.2, 3.0]))
    n, g_small, g_rest = bh.shrunken_filters(conv, bn)
    assert n == 2
    torch.testing.assert_close(g_small, (0.4 + 0.2) / 2)
    torch.testing.assert_close(g_rest, (1.0 + 3.0) / 2)
    with torch.no_grad():
        conv.weight.fill_(1.0)
    assert bh.shrunken_filters(conv, bn)[:2] == (0, None) and bh._gamma(None) == "—"
