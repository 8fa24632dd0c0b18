"""CIFAR ResNets (He et al. 2016) with basic blocks and projection shortcuts (option B: 1×1 conv +
BN where the shape changes), so every residual branch has prunable filters.

resnet20/56: 3 stages of 16-32-64 channels, (depth−2)/6 blocks each (272,474 and 855,770
parameters for 10 classes; the option-A originals with parameter-free shortcuts have 0.27M/0.85M).
resnet18: the CIFAR variant (3×3 stride-1 stem, no max-pool), stages 64-128-256-512 × 2 blocks.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class BasicBlock(nn.Module):
    """relu(bn(conv(relu(bn(conv(x))))) + shortcut(x)), two 3×3 convs."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = nn.Sequential()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    """3×3 stem → stages of BasicBlocks (first block of each later stage strides 2) → GAP → Linear."""

    def __init__(self, widths: tuple[int, ...], blocks: tuple[int, ...], in_channels: int, num_classes: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        stages, c_in = [], widths[0]
        for i, (width, n) in enumerate(zip(widths, blocks)):
            strides = [1 if i == 0 else 2] + [1] * (n - 1)
            stage = []
            for s in strides:
                stage.append(BasicBlock(c_in, width, s))
                c_in = width
            stages.append(nn.Sequential(*stage))
        self.layers = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c_in, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.layers(F.relu(self.bn1(self.conv1(x))))
        return self.fc(torch.flatten(self.pool(out), 1))


def cifar_resnet(depth: int, in_channels: int, num_classes: int) -> ResNet:
    """ResNet-`depth` for 32×32 inputs, depth = 6n + 2."""
    if (depth - 2) % 6 or depth < 8:
        raise ValueError(f"depth must be 6n+2 with n >= 1, got depth={depth!r}")
    n = (depth - 2) // 6
    return ResNet((16, 32, 64), (n, n, n), in_channels, num_classes)


def resnet18_cifar(in_channels: int, num_classes: int) -> ResNet:
    return ResNet((64, 128, 256, 512), (2, 2, 2, 2), in_channels, num_classes)
