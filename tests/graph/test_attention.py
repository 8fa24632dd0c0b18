"""`HeadedMultiheadAttention` computes what nn.MultiheadAttention computes (float64): batch first or
not, unbatched, with attention weights (averaged or per head) or without, with bool and float
attention masks and key padding masks."""
import copy

import pytest
import torch
from torch import nn

from sparsefw.graph.attention import HeadedMultiheadAttention, with_headed_attention


@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("options", ["plain", "no_weights", "per_head", "bool_mask", "float_mask", "padding"])
def test_same_function_as_nn_multihead_attention(batch_first, options):
    torch.manual_seed(0)
    reference = nn.MultiheadAttention(16, 4, batch_first=batch_first).double().eval()
    headed = with_headed_attention(copy.deepcopy(reference))
    assert type(headed) is HeadedMultiheadAttention
    n, length = 3, 5
    x = torch.randn((n, length, 16) if batch_first else (length, n, 16), dtype=torch.float64)
    causal = torch.triu(torch.ones(length, length, dtype=torch.bool), 1)
    padding = torch.zeros(n, length, dtype=torch.bool)
    padding[0, -2:] = True
    kwargs = {"plain": {}, "no_weights": {"need_weights": False}, "per_head": {"average_attn_weights": False},
              "bool_mask": {"attn_mask": causal}, "float_mask": {"attn_mask": torch.randn(length, length).double()},
              "padding": {"key_padding_mask": padding}}[options]
    with torch.no_grad():
        expected, got = reference(x, x, x, **kwargs), headed(x, x, x, **kwargs)
        torch.testing.assert_close(got[0], expected[0], rtol=1e-12, atol=1e-12)
        assert (got[1] is None) == (expected[1] is None)
        if got[1] is not None:
            torch.testing.assert_close(got[1], expected[1], rtol=1e-12, atol=1e-12)
        unbatched = x[0] if batch_first else x[:, 0]
        torch.testing.assert_close(headed(unbatched, unbatched, unbatched)[0],
                                   reference(unbatched, unbatched, unbatched)[0], rtol=1e-12, atol=1e-12)
