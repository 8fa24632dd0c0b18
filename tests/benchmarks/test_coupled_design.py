"""bench_coupled_training design's instruments: masking by the library's ranking is the physically removed
model, and the weakest-half share is 0 for a space whose lower half is zero and ½ for a flat one."""
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import bench_coupled_training as bd  # noqa: E402
from sparsefw.compress import channel_groups, remove_filters  # noqa: E402
from sparsefw.models.resnet import ResNet  # noqa: E402


def _trained_looking_resnet():
    torch.manual_seed(0)
    model = ResNet((4, 8), (1, 1), 3, 5).double()
    with torch.no_grad():                   # distinct channel norms, non-trivial BN statistics
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.2, 2.0)
                m.bias.uniform_(-0.5, 0.5)
                m.running_mean.uniform_(-0.3, 0.3)
                m.running_var.uniform_(0.5, 2.0)
    return model.eval()


def test_masking_by_the_joint_norm_equals_coupled_removal():
    model = _trained_looking_resnet()
    x = torch.randn(3, 3, 12, 12, dtype=torch.float64)
    groups = channel_groups(model, x[:2])
    for amount in (0.25, 0.5):
        masked = bd.masked(model, groups, amount, "all")
        removed = remove_filters(model, amount, x[:2], criterion="l2", coupled=True)
        torch.testing.assert_close(masked(x), removed(x), rtol=1e-10, atol=1e-10)


def test_weakest_half_share():
    model = _trained_looking_resnet()
    groups = channel_groups(model, torch.randn(2, 3, 12, 12, dtype=torch.float64))
    state = dict(model.named_parameters())
    with torch.no_grad():
        for group in groups:                # every member slice of channels 0 … C/2−1 zeroed
            for m in group.members:
                if m.parameter:
                    state[m.name].index_fill_(m.dim, m.index[:group.size // 2].flatten(), 0.0)
    assert bd.weakest_half_share(model, groups) == ", ".join(f"{c}: 0.00" for c in sorted({g.size for g in groups}))
    with torch.no_grad():
        for group in groups:                # every channel's joint norm equal: share ½
            for m in group.members:
                if m.parameter:
                    state[m.name].fill_(0.3)
    assert all(part.endswith("0.50") for part in bd.weakest_half_share(model, groups).split(", "))
