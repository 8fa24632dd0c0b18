"""The small CNN of the MNIST/Fashion-MNIST experiments: four 3×3 convs (32-32-64-64) with BN and
ReLU, 2×2 max-pool after the 2nd and 4th, global average pool, Linear."""
from __future__ import annotations

import torch
from torch import nn


def conv_bn_relu(c_in: int, c_out: int, stride: int = 1, dilation: int = 1) -> list[nn.Module]:
    """3×3 conv (no bias: BN follows; padding = dilation keeps the size at stride 1), BN, ReLU."""
    return [nn.Conv2d(c_in, c_out, 3, stride=stride, padding=dilation, dilation=dilation, bias=False),
            nn.BatchNorm2d(c_out), nn.ReLU()]


class SmallCNN(nn.Module):
    def __init__(self, in_channels: int, num_classes: int, widths: tuple[int, int, int, int] = (32, 32, 64, 64)):
        super().__init__()
        w1, w2, w3, w4 = widths
        self.features = nn.Sequential(
            *conv_bn_relu(in_channels, w1), *conv_bn_relu(w1, w2), nn.MaxPool2d(2),
            *conv_bn_relu(w2, w3), *conv_bn_relu(w3, w4), nn.MaxPool2d(2),
            nn.AdaptiveAvgPool2d(1))
        self.classifier = nn.Linear(w4, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))
