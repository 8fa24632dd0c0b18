"""Wide ResNet (Zagoruyko & Komodakis 2016), WRN-d-k: pre-activation basic blocks, stages of
16k-32k-64k channels with (d−4)/6 blocks each, 1×1 conv shortcut where the shape changes.
WRN-28-10 has 36.5M parameters."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class PreActBlock(nn.Module):
    """conv(relu(bn(conv(relu(bn(x)))))) + shortcut, the shortcut taken from relu(bn(x)) when it is a conv."""

    def __init__(self, c_in: int, c_out: int, stride: int, dropout: float):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.dropout = nn.Dropout(dropout)
        self.projection = stride != 1 or c_in != c_out
        self.shortcut = nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False) if self.projection else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        act = F.relu(self.bn1(x))
        out = self.conv2(self.dropout(F.relu(self.bn2(self.conv1(act)))))
        return out + self.shortcut(act if self.projection else x)


class WideResNet(nn.Module):
    def __init__(self, depth: int, widen: int, in_channels: int, num_classes: int, dropout: float = 0.0):
        super().__init__()
        if (depth - 4) % 6 or depth < 10:
            raise ValueError(f"depth must be 6n+4 with n >= 1, got depth={depth!r}")
        n = (depth - 4) // 6
        widths = (16 * widen, 32 * widen, 64 * widen)
        self.conv1 = nn.Conv2d(in_channels, 16, 3, padding=1, bias=False)
        stages, c_in = [], 16
        for i, width in enumerate(widths):
            stage = []
            for j in range(n):
                stage.append(PreActBlock(c_in, width, 2 if (i > 0 and j == 0) else 1, dropout))
                c_in = width
            stages.append(nn.Sequential(*stage))
        self.layers = nn.Sequential(*stages)
        self.bn = nn.BatchNorm2d(c_in)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c_in, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn(self.layers(self.conv1(x))))
        return self.fc(torch.flatten(self.pool(out), 1))
