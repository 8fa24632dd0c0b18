"""Test zoo: conv nets written the way popular model libraries write them (timm, torchvision,
segmentation repos) — forwards that branch on shapes, take keyword arguments, return dataclasses or
dicts, use in-place ops and functional calls. Small widths; built from arguments, no download."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from sparsefw.models import UNet as SegUNet


# ---- ResNet with forward_features / forward_head and a dataclass output -----------------------
@dataclass
class ClassifierOutput:
    logits: torch.Tensor
    pooled: torch.Tensor


class ResBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.act1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.act2 = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):
        shortcut = x
        x = self.act1(self.bn1(self.conv1(x)))
        x = self.bn2(self.conv2(x))
        if self.downsample is not None:
            shortcut = self.downsample(shortcut)
        x += shortcut
        return self.act2(x)


class LibResNet(nn.Module):
    def __init__(self, layers=(1, 1, 1), widths=(8, 16, 24), num_classes=7, in_chans=3):
        super().__init__()
        self.num_classes = num_classes
        self.conv1 = nn.Conv2d(in_chans, widths[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.act1 = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        stages, inplanes = [], widths[0]
        for i, (n, planes) in enumerate(zip(layers, widths)):
            stride = 1 if i == 0 else 2
            blocks = []
            for b in range(n):
                down = None
                if b == 0 and (stride != 1 or inplanes != planes):
                    down = nn.Sequential(nn.Conv2d(inplanes, planes, 1, stride, bias=False),
                                         nn.BatchNorm2d(planes))
                blocks.append(ResBlock(inplanes, planes, stride if b == 0 else 1, down))
                inplanes = planes
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.num_features = inplanes
        self.fc = nn.Linear(inplanes, num_classes)

    def forward_features(self, x):
        x = self.act1(self.bn1(self.conv1(x)))
        if x.shape[-1] > 16:  # large inputs get the stem pool (a shape branch)
            x = self.maxpool(x)
        return self.layer3(self.layer2(self.layer1(x)))

    def forward_head(self, x, pre_logits: bool = False):
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)
        return x if pre_logits else self.fc(x)

    def forward(self, x, *, return_pooled: bool = True):
        pooled = self.forward_head(self.forward_features(x), pre_logits=True)
        return ClassifierOutput(logits=self.fc(pooled), pooled=pooled if return_pooled else None)


# ---- MobileNetV2: inverted residuals, depthwise convs ------------------------------------------
class ConvBNActivation(nn.Sequential):
    def __init__(self, inp, oup, kernel=3, stride=1, groups=1):
        super().__init__(nn.Conv2d(inp, oup, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
                         nn.BatchNorm2d(oup), nn.ReLU6(inplace=True))


class InvertedResidual(nn.Module):
    def __init__(self, inp, oup, stride, expand_ratio):
        super().__init__()
        hidden = int(round(inp * expand_ratio))
        self.use_res_connect = stride == 1 and inp == oup
        layers = [ConvBNActivation(inp, hidden, kernel=1)] if expand_ratio != 1 else []
        layers += [ConvBNActivation(hidden, hidden, stride=stride, groups=hidden),
                   nn.Conv2d(hidden, oup, 1, bias=False), nn.BatchNorm2d(oup)]
        self.conv = nn.Sequential(*layers)

    def forward(self, x):
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


class MobileNetV2(nn.Module):
    #                    t, c, n, s
    SETTING = ((1, 8, 1, 1), (4, 12, 2, 2), (4, 16, 2, 2))

    def __init__(self, num_classes=5, width=8, last=32, setting=SETTING):
        super().__init__()
        features = [ConvBNActivation(3, width, stride=2)]
        inp = width
        for t, c, n, s in setting:
            for i in range(n):
                features.append(InvertedResidual(inp, c, s if i == 0 else 1, t))
                inp = c
        features.append(ConvBNActivation(inp, last, kernel=1))
        self.features = nn.Sequential(*features)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(last, num_classes))

    def forward(self, x):
        x = self.features(x)
        x = nn.functional.adaptive_avg_pool2d(x, (1, 1))
        return self.classifier(torch.flatten(x, 1))


# ---- ConvNeXt-style: depthwise 7×7, channels-last LayerNorm, Linear MLP, layer scale -----------
class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of an NCHW tensor (timm's way: permute, normalize, permute)."""

    def forward(self, x):
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class ConvNeXtBlock(nn.Module):
    def __init__(self, dim, mlp_ratio=4, ls_init_value=0.5):
        super().__init__()
        self.conv_dw = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_ratio * dim), nn.GELU(), nn.Linear(mlp_ratio * dim, dim))
        self.gamma = nn.Parameter(ls_init_value * torch.ones(dim))

    def forward(self, x):
        shortcut = x
        x = self.conv_dw(x).permute(0, 2, 3, 1)
        x = self.mlp(self.norm(x))
        x = x.mul(self.gamma).permute(0, 3, 1, 2)
        return x + shortcut


class ConvNeXtTiny(nn.Module):
    def __init__(self, dims=(8, 16), depths=(1, 1), num_classes=6):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, dims[0], 4, stride=4), LayerNorm2d(dims[0]))
        stages, prev = [], dims[0]
        for i, (dim, depth) in enumerate(zip(dims, depths)):
            down = nn.Identity() if i == 0 else nn.Sequential(LayerNorm2d(prev), nn.Conv2d(prev, dim, 2, 2))
            stages.append(nn.Sequential(down, *[ConvNeXtBlock(dim) for _ in range(depth)]))
            prev = dim
        self.stages = nn.Sequential(*stages)
        self.norm_pre = nn.LayerNorm(prev)
        self.head = nn.Linear(prev, num_classes)

    def forward(self, x):
        x = self.stages(self.stem(x)).mean((-2, -1))
        return {"logits": self.head(self.norm_pre(x))}


# ---- DenseNet-style concatenation ---------------------------------------------------------------
class DenseLayer(nn.Module):
    def __init__(self, num_input_features, growth_rate, bn_size=2):
        super().__init__()
        self.norm1 = nn.BatchNorm2d(num_input_features)
        self.conv1 = nn.Conv2d(num_input_features, bn_size * growth_rate, 1, bias=False)
        self.norm2 = nn.BatchNorm2d(bn_size * growth_rate)
        self.conv2 = nn.Conv2d(bn_size * growth_rate, growth_rate, 3, padding=1, bias=False)

    def forward(self, prev_features: list[torch.Tensor]):
        x = torch.cat(prev_features, 1)
        x = self.conv1(F.relu(self.norm1(x)))
        return self.conv2(F.relu(self.norm2(x)))


class DenseNetMini(nn.Module):
    def __init__(self, growth_rate=4, block_config=(2, 2), num_init_features=8, num_classes=4):
        super().__init__()
        self.conv0 = nn.Conv2d(3, num_init_features, 3, padding=1, bias=False)
        self.norm0 = nn.BatchNorm2d(num_init_features)
        self.blocks, self.transitions = nn.ModuleList(), nn.ModuleList()
        features = num_init_features
        for i, n in enumerate(block_config):
            self.blocks.append(nn.ModuleList(DenseLayer(features + j * growth_rate, growth_rate) for j in range(n)))
            features += n * growth_rate
            if i != len(block_config) - 1:
                self.transitions.append(nn.Sequential(nn.BatchNorm2d(features), nn.ReLU(inplace=True),
                                                      nn.Conv2d(features, features // 2, 1, bias=False),
                                                      nn.AvgPool2d(2, 2)))
                features //= 2
        self.norm5 = nn.BatchNorm2d(features)
        self.classifier = nn.Linear(features, num_classes)

    def forward(self, x):
        x = F.relu(self.norm0(self.conv0(x)))
        for i, block in enumerate(self.blocks):
            features = [x]
            for layer in block:
                features.append(layer(features))
            x = torch.cat(features, 1)
            if i < len(self.transitions):
                x = self.transitions[i](x)
        x = F.relu(self.norm5(x), inplace=True)
        return self.classifier(torch.flatten(F.adaptive_avg_pool2d(x, (1, 1)), 1))


# ---- squeeze-and-excitation (channel-wise mul) ---------------------------------------------------
class SqueezeExcite(nn.Module):
    def __init__(self, channels, rd_ratio=0.25):
        super().__init__()
        rd = max(1, int(channels * rd_ratio))
        self.fc1 = nn.Conv2d(channels, rd, 1)
        self.act = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(rd, channels, 1)

    def forward(self, x):
        x_se = x.mean((2, 3), keepdim=True)
        x_se = self.fc2(self.act(self.fc1(x_se)))
        return x * x_se.sigmoid()


class SEBlock(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.se = SqueezeExcite(channels)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.se(self.bn2(self.conv2(out)))
        return F.relu(out + x)


class SENet(nn.Module):
    def __init__(self, width=8, num_classes=3):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU())
        self.blocks = nn.Sequential(SEBlock(width), SEBlock(width))
        self.fc = nn.Linear(width, num_classes)

    def forward(self, x):
        return self.fc(self.blocks(self.stem(x)).mean((2, 3)))


# ---- U-Net with skip concatenations --------------------------------------------------------------
class DoubleConv(nn.Sequential):
    def __init__(self, cin, cout):
        super().__init__(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                         nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class UNet(nn.Module):
    def __init__(self, in_channels=3, n_classes=2, base=6):
        super().__init__()
        self.inc = DoubleConv(in_channels, base)
        self.down1 = nn.Sequential(nn.MaxPool2d(2), DoubleConv(base, 2 * base))
        self.down2 = nn.Sequential(nn.MaxPool2d(2), DoubleConv(2 * base, 4 * base))
        self.up1 = nn.ConvTranspose2d(4 * base, 2 * base, 2, stride=2)
        self.conv1 = DoubleConv(4 * base, 2 * base)
        self.up2 = nn.ConvTranspose2d(2 * base, base, 2, stride=2)
        self.conv2 = DoubleConv(2 * base, base)
        self.outc = nn.Conv2d(base, n_classes, 1)

    def forward(self, x):
        x1 = self.inc(x)
        x2 = self.down1(x1)
        x3 = self.down2(x2)
        x = self.conv1(torch.cat([x2, self.up1(x3)], dim=1))
        x = self.conv2(torch.cat([x1, self.up2(x)], dim=1))
        return {"out": self.outc(x)}


ZOO = {  # name: (constructor, two input sizes)
    "resnet": (LibResNet, [(20, 20), (14, 18)]),
    "mobilenetv2": (MobileNetV2, [(16, 16), (20, 12)]),
    "convnext": (ConvNeXtTiny, [(16, 16), (24, 32)]),
    "densenet": (DenseNetMini, [(8, 8), (10, 6)]),
    "senet": (SENet, [(8, 8), (7, 9)]),
    "unet": (UNet, [(16, 16), (24, 20)]),
    # the library's own: bilinear upsampling, skip concatenations, a dilated conv
    "sparsefw_unet": (lambda: SegUNet(3, 5, widths=(6, 8, 10)), [(16, 16), (24, 20)]),
}


def first_tensor(output):
    """The main output tensor of a zoo model (logits / segmentation map)."""
    if isinstance(output, ClassifierOutput):
        return output.logits
    if isinstance(output, dict):
        return next(iter(output.values()))
    return output
