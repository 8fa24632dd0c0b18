"""Capturing a model for the channel analysis (`sparsefw.graph.capture`): a model torch.export
cannot capture gets one ValueError naming the model and torch.export."""
import pytest
import torch
from torch import nn

from sparsefw.graph import channel_groups


class _DataDependent(nn.Module):
    """A forward that branches on the values of its input."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x):
        return self.conv(x) if x.sum() > 0 else x


def test_a_model_torch_export_cannot_capture_is_one_clear_message():
    with pytest.raises(ValueError, match=r"could not capture _DataDependent with torch.export"):
        channel_groups(_DataDependent(), torch.randn(1, 3, 8, 8))
