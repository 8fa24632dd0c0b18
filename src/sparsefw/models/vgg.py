"""VGG-16 with batch norm, CIFAR variant: 13 3×3 conv-BN-ReLU layers in 5 blocks with max-pools,
global average pool (= flatten at 32×32), one Linear(512, classes)."""
from __future__ import annotations

import torch
from torch import nn

from .cnn import conv_bn_relu

VGG16_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")


class VGG(nn.Module):
    def __init__(self, in_channels: int, num_classes: int, cfg=VGG16_CFG):
        super().__init__()
        layers, c_in = [], in_channels
        for item in cfg:
            if item == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                layers += conv_bn_relu(c_in, item)
                c_in = item
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1))
        self.classifier = nn.Linear(c_in, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))
