"""ImageNet-layout nets without torchvision: ResNet-50 (He et al. 2016, bottleneck blocks, the stride
on the 3×3 conv as torchvision's v1.5) and MobileNetV2 (Sandler et al. 2018, inverted residuals with
depthwise convs). At the defaults their parameters match torchvision's resnet50 and mobilenet_v2
(25,557,032 and 3,504,872 for 1000 classes).

`channels` maps every channel count of the architecture to the one built (default: unchanged), e.g.
`lambda c: c - c // 2` builds the net at the widths that removing half the channels of every space
leaves: the native net a compressed one can be compared with.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn


def _same(c: int) -> int:
    return c


class Bottleneck(nn.Module):
    """relu(bn(1×1) → relu(bn(3×3, stride)) → bn(1×1) + shortcut(x)); the shortcut is a 1×1 conv + BN
    where the shape changes."""

    def __init__(self, c_in: int, planes: int, c_out: int, stride: int):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(c_in, planes, 1, bias=False), nn.BatchNorm2d(planes)
        self.conv2, self.bn2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False), nn.BatchNorm2d(planes)
        self.conv3, self.bn3 = nn.Conv2d(planes, c_out, 1, bias=False), nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or c_in != c_out:
            self.downsample = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.relu(self.bn3(self.conv3(out)) + identity)


class BottleneckResNet(nn.Module):
    """7×7/2 stem, 3×3/2 max-pool, stages of bottlenecks of widths base·2^i (outputs ×4; the first block
    of each later stage strides 2), GAP, Linear. base 64 and blocks (3, 4, 6, 3): ResNet-50."""

    def __init__(self, in_channels: int = 3, num_classes: int = 1000, base: int = 64, blocks=(3, 4, 6, 3),
                 channels: Callable[[int], int] = _same):
        super().__init__()
        stem = channels(base)
        self.conv1, self.bn1 = nn.Conv2d(in_channels, stem, 7, 2, 3, bias=False), nn.BatchNorm2d(stem)
        self.relu, self.maxpool = nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1)
        layers, c_in = [], stem
        for i, n in enumerate(blocks):
            planes = base * 2 ** i
            for b in range(n):
                layers.append(Bottleneck(c_in, channels(planes), channels(planes * 4), 2 if i > 0 and b == 0 else 1))
                c_in = channels(planes * 4)
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(c_in, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(self.layers(x), 1), 1))


class InvertedResidual(nn.Module):
    """[1×1 expansion] → 3×3 depthwise (stride) → 1×1 projection, BN after each, ReLU6 after the first
    two; x + that when the shape is kept."""

    def __init__(self, c_in: int, hidden: int, c_out: int, stride: int, expand: bool):
        super().__init__()
        layers = [nn.Conv2d(c_in, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6(inplace=True)] \
            if expand else []
        layers += [nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False), nn.BatchNorm2d(hidden),
                   nn.ReLU6(inplace=True), nn.Conv2d(hidden, c_out, 1, bias=False), nn.BatchNorm2d(c_out)]
        self.conv = nn.Sequential(*layers)
        self.use_res = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_res else self.conv(x)


class MobileNetV2(nn.Module):
    """3×3/2 stem of 32, the inverted residual stages of SETTING (expansion t, channels c, blocks n,
    stride s), a 1×1 conv to 1280, GAP, dropout 0.2, Linear."""
    SETTING = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
               (6, 320, 1, 1))

    def __init__(self, in_channels: int = 3, num_classes: int = 1000, channels: Callable[[int], int] = _same):
        super().__init__()
        stem = channels(32)
        features = [nn.Sequential(nn.Conv2d(in_channels, stem, 3, 2, 1, bias=False), nn.BatchNorm2d(stem),
                                  nn.ReLU6(inplace=True))]
        c_in, full_in = stem, 32
        for t, c, n, s in self.SETTING:
            for i in range(n):
                features.append(InvertedResidual(c_in, channels(full_in * t), channels(c), s if i == 0 else 1, t != 1))
                c_in, full_in = channels(c), c
        last = channels(1280)
        features.append(nn.Sequential(nn.Conv2d(c_in, last, 1, bias=False), nn.BatchNorm2d(last),
                                      nn.ReLU6(inplace=True)))
        self.features = nn.Sequential(*features)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(last, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(nn.functional.adaptive_avg_pool2d(self.features(x), 1), 1))
