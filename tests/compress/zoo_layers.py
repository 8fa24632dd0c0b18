"""Layer zoo: models whose forwards read their layers' attributes the way popular libraries do, so a
compressed layer must keep its layer's interface. Small widths; image inputs (batch, 3, H, W)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


# ---- Hugging Face ViT: embeddings cast the pixels to the projection's weight dtype ---------------
class ViTPatchEmbeddings(nn.Module):
    def __init__(self, patch_size=4, num_channels=3, hidden_size=16):
        super().__init__()
        self.num_channels = num_channels
        self.projection = nn.Conv2d(num_channels, hidden_size, patch_size, stride=patch_size)

    def forward(self, pixel_values):
        batch_size, num_channels, height, width = pixel_values.shape
        if num_channels != self.num_channels:
            raise ValueError("channel dimension of the pixel values does not match the configuration")
        target_dtype = self.projection.weight.dtype
        return self.projection(pixel_values.to(dtype=target_dtype)).flatten(2).transpose(1, 2)


class EncoderBlock(nn.Module):
    """torchvision's ViT block: nn.MultiheadAttention (its out_proj, a NonDynamicallyQuantizableLinear,
    is read as out_proj.weight/bias and passed to F.multi_head_attention_forward), then an MLP."""

    def __init__(self, hidden_dim=16, num_heads=2, mlp_dim=32):
        super().__init__()
        self.ln_1 = nn.LayerNorm(hidden_dim)
        self.self_attention = nn.MultiheadAttention(hidden_dim, num_heads, batch_first=True)
        self.ln_2 = nn.LayerNorm(hidden_dim)
        self.mlp = nn.Sequential(nn.Linear(hidden_dim, mlp_dim), nn.GELU(), nn.Linear(mlp_dim, hidden_dim))

    def forward(self, x):
        y = self.ln_1(x)
        y, _ = self.self_attention(y, y, y, need_weights=False)
        x = x + y
        return x + self.mlp(self.ln_2(x))


class TinyViT(nn.Module):
    def __init__(self, hidden_size=16, num_classes=5):
        super().__init__()
        self.patch_embeddings = ViTPatchEmbeddings(hidden_size=hidden_size)
        self.cls_token = nn.Parameter(torch.randn(1, 1, hidden_size))
        self.encoder = EncoderBlock(hidden_size)
        self.layernorm = nn.LayerNorm(hidden_size)
        self.classifier = nn.Linear(hidden_size, num_classes)

    def forward(self, pixel_values):
        embeddings = self.patch_embeddings(pixel_values)
        cls = self.cls_token.expand(embeddings.shape[0], -1, -1).to(embeddings.dtype)
        x = self.encoder(torch.cat([cls, embeddings], dim=1))
        return self.classifier(self.layernorm(x)[:, 0])


# ---- a MobileNetV2 port from TensorFlow: "same" padding computed from the conv's attributes -------
class Conv2dSame(nn.Module):
    """Pads like TensorFlow's padding="SAME" (more at the bottom/right), reading the wrapped conv's
    kernel_size, stride and dilation on every call, then runs the conv unpadded."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, dilation=1, groups=1):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, 0, dilation, groups, bias=False)

    def forward(self, x):
        pads = []
        for size, k, s, d in zip(x.shape[:1:-1], self.conv.kernel_size[::-1], self.conv.stride[::-1],
                                 self.conv.dilation[::-1]):
            total = max((math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size, 0)
            pads += [total // 2, total - total // 2]
        return self.conv(F.pad(x, pads))


class SameInvertedResidual(nn.Module):
    def __init__(self, inp, oup, stride, expand_ratio=4):
        super().__init__()
        hidden = inp * expand_ratio
        self.use_res_connect = stride == 1 and inp == oup
        self.expand = nn.Sequential(Conv2dSame(inp, hidden, 1), nn.BatchNorm2d(hidden), nn.ReLU6())
        self.depthwise = nn.Sequential(Conv2dSame(hidden, hidden, 3, stride, groups=hidden),
                                       nn.BatchNorm2d(hidden), nn.ReLU6())
        self.project = nn.Sequential(Conv2dSame(hidden, oup, 1), nn.BatchNorm2d(oup))

    def forward(self, x):
        y = self.project(self.depthwise(self.expand(x)))
        return x + y if self.use_res_connect else y


class TFMobileNetV2(nn.Module):
    def __init__(self, num_classes=4):
        super().__init__()
        self.stem = nn.Sequential(Conv2dSame(3, 8, 3, stride=2), nn.BatchNorm2d(8), nn.ReLU6())
        self.blocks = nn.Sequential(SameInvertedResidual(8, 8, 1), SameInvertedResidual(8, 12, 2))
        self.head = nn.Sequential(Conv2dSame(12, 16, 3, dilation=2), nn.BatchNorm2d(16), nn.ReLU6())
        self.classifier = nn.Linear(16, num_classes)

    def forward(self, x):
        return self.classifier(self.head(self.blocks(self.stem(x))).mean((2, 3)))


# ---- a classifier head sized by reading the Linear's in_features --------------------------------
class InFeaturesHead(nn.Module):
    """Convs, then `x.reshape(-1, self.fc.in_features)` (the flattened width read from the Linear)
    and a hidden Linear sized by `self.fc.out_features`."""

    def __init__(self, num_classes=3):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                      nn.Conv2d(8, 6, 3, stride=2, padding=1), nn.ReLU(),
                                      nn.AdaptiveAvgPool2d(2))
        self.fc = nn.Linear(6 * 2 * 2, 20)
        self.out = nn.Linear(20, num_classes)

    def forward(self, x):
        h = torch.relu(self.fc(self.features(x).reshape(-1, self.fc.in_features)))
        return self.out(h.view(-1, self.fc.out_features))


LAYER_ZOO = {  # name: (constructor, two input sizes)
    "vit": (TinyViT, [(8, 8), (8, 8)]),
    "tf_mobilenetv2": (TFMobileNetV2, [(15, 17), (12, 9)]),
    "in_features_head": (InFeaturesHead, [(8, 8), (11, 7)]),
}
