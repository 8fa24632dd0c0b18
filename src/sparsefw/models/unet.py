"""A small U-Net-style segmentation net: an encoder at full, 1/2 and 1/4 resolution (max-pool down,
conv-BN-ReLU stages; the 1/4 stage ends in a conv of dilation 2), a decoder that upsamples ×2
(bilinear) and concatenates the encoder's features of that resolution before each conv-BN-ReLU,
and a 1×1 conv to per-pixel class logits (N, classes, H, W); H and W must be multiples of 4."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .cnn import conv_bn_relu


class UNet(nn.Module):
    def __init__(self, in_channels: int, num_classes: int, widths: tuple[int, int, int] = (16, 32, 64)):
        super().__init__()
        w1, w2, w3 = widths
        self.enc1 = nn.Sequential(*conv_bn_relu(in_channels, w1))
        self.enc2 = nn.Sequential(nn.MaxPool2d(2), *conv_bn_relu(w1, w2))
        self.enc3 = nn.Sequential(nn.MaxPool2d(2), *conv_bn_relu(w2, w3), *conv_bn_relu(w3, w3, dilation=2))
        self.dec2 = nn.Sequential(*conv_bn_relu(w3 + w2, w2))
        self.dec1 = nn.Sequential(*conv_bn_relu(w2 + w1, w1))
        self.classifier = nn.Conv2d(w1, num_classes, 1)

    @staticmethod
    def _up(x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = self.enc1(x)
        x2 = self.enc2(x1)
        x = self.dec2(torch.cat([self._up(self.enc3(x2)), x2], dim=1))
        x = self.dec1(torch.cat([self._up(x), x1], dim=1))
        return self.classifier(x)
