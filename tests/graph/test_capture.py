"""Capturing a model for the channel analysis (`sparsefw.graph.capture`): a model torch.export
cannot capture gets one ValueError naming the model and torch.export."""
import pytest
import torch

from nets import DataDependent
from sparsefw.graph import channel_groups


def test_a_model_torch_export_cannot_capture_is_one_clear_message():
    with pytest.raises(ValueError, match=r"could not capture DataDependent with torch.export"):
        channel_groups(DataDependent(), torch.randn(1, 3, 8, 8))
