"""A small fully convolutional segmentation net: conv-BN-ReLU encoder down to 1/4 resolution
(two stride-2 convs), a decoder of two (bilinear ×2 upsample, conv-BN-ReLU) stages, and a 1×1
conv to per-pixel class logits (N, classes, H, W); H and W must be multiples of 4."""
from __future__ import annotations

import torch
from torch import nn

from .cnn import conv_bn_relu


class FCN(nn.Module):
    def __init__(self, in_channels: int, num_classes: int, widths: tuple[int, int, int] = (32, 64, 128)):
        super().__init__()
        w1, w2, w3 = widths
        self.encoder = nn.Sequential(
            *conv_bn_relu(in_channels, w1), *conv_bn_relu(w1, w2, stride=2),
            *conv_bn_relu(w2, w3, stride=2), *conv_bn_relu(w3, w3))
        self.decoder = nn.Sequential(
            nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False), *conv_bn_relu(w3, w2),
            nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False), *conv_bn_relu(w2, w1))
        self.classifier = nn.Conv2d(w1, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.decoder(self.encoder(x)))
