"""Small test architectures covering what filter removal must handle."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class PlainCNN(nn.Module):
    """conv-BN-ReLU ×3 with max-pools, flatten → Linear (spatial size fixed by the Linear)."""

    def __init__(self, in_channels=3, num_classes=5, spatial=8):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
            nn.Conv2d(8, 12, 3, padding=1, bias=False), nn.BatchNorm2d(12), nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(12, 10, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.classifier = nn.Linear(10 * (spatial // 4) ** 2, num_classes)

    def forward(self, x):
        return self.classifier(torch.flatten(self.features(x), 1))


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                          nn.BatchNorm2d(cout))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += self.shortcut(x)
        return F.relu(out)


class CifarResNet(nn.Module):
    """ResNet-20 layout (3 stages, 1×1 projection shortcuts), `blocks` blocks per stage."""

    def __init__(self, blocks=1, width=8, num_classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        layers, cin = [], width
        for i, cout in enumerate((width, 2 * width, 4 * width)):
            for b in range(blocks):
                layers.append(BasicBlock(cin, cout, 2 if (i > 0 and b == 0) else 1))
                cin = cout
        self.layers = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.pool(self.layers(out))
        return self.fc(out.view(out.size(0), -1))


class DepthwiseNet(nn.Module):
    """MobileNet-style: depthwise 3×3 + pointwise 1×1 blocks, ReLU6, an inverted residual, a
    grouped conv (groups=2) and a depthwise conv with channel multiplier 2."""

    def __init__(self, num_classes=4):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.BatchNorm2d(8), nn.ReLU6())
        self.dw1 = nn.Sequential(nn.Conv2d(8, 8, 3, 1, 1, groups=8, bias=False),
                                 nn.BatchNorm2d(8), nn.ReLU6())
        self.pw1 = nn.Sequential(nn.Conv2d(8, 12, 1, bias=False), nn.BatchNorm2d(12), nn.ReLU6())
        self.expand = nn.Sequential(nn.Conv2d(12, 24, 1, bias=False), nn.BatchNorm2d(24),
                                    nn.ReLU6())
        self.dw2 = nn.Sequential(nn.Conv2d(24, 24, 3, 1, 1, groups=24), nn.BatchNorm2d(24),
                                 nn.Hardswish())
        self.project = nn.Sequential(nn.Conv2d(24, 12, 1, groups=2), nn.BatchNorm2d(12))
        self.dw3 = nn.Conv2d(12, 24, 3, 2, 1, groups=12)
        self.head = nn.Linear(24, num_classes)

    def forward(self, x):
        x = self.pw1(self.dw1(self.stem(x)))
        x = x + self.project(self.dw2(self.expand(x)))
        x = torch.sigmoid(self.dw3(x))
        return self.head(x.mean((2, 3)))


class ConcatNet(nn.Module):
    """Inception-style branches joined by torch.cat, an avg-pool and a 5×5 conv with dilation."""

    def __init__(self, num_classes=3):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 10, 3, padding=1), nn.BatchNorm2d(10), nn.ReLU())
        self.a = nn.Sequential(nn.Conv2d(10, 6, 1), nn.BatchNorm2d(6), nn.LeakyReLU(0.1))
        self.b = nn.Sequential(nn.Conv2d(10, 7, 3, padding=2, dilation=2), nn.BatchNorm2d(7),
                               nn.GELU())
        self.mix = nn.Sequential(nn.AvgPool2d(2), nn.Conv2d(13, 9, 5, padding=2), nn.ReLU())
        self.fc = nn.Linear(9, num_classes)

    def forward(self, x):
        x = self.stem(x)
        x = torch.cat([self.a(x), self.b(x)], dim=1)
        x = self.mix(x)
        return self.fc(F.adaptive_max_pool2d(x, 1).flatten(1))


class SplitNet(nn.Module):
    """A split along the channels (sizes written in the forward) and a chunk along the width."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 6, 3, padding=1), nn.Conv2d(3, 7, 3, padding=1)
        self.c, self.d = nn.Conv2d(6, 8, 1), nn.Conv2d(7, 8, 1)
        self.fc = nn.Linear(8, 2)

    def forward(self, x):
        p, q = torch.split(torch.cat([self.a(x), self.b(x)], 1), [6, 7], dim=1)
        left, right = (torch.relu(self.c(p)) + self.d(q)).chunk(2, dim=3)
        return self.fc((left * right.sigmoid()).mean((2, 3)))


def randomize(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial BN statistics/affine and biases so removed channels emit non-zero constants
    (some positive, some killed by the ReLU). In place; returns the model in float64 eval mode."""
    gen = torch.Generator().manual_seed(seed)
    model.double().eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                c = m.num_features
                m.running_mean.copy_(torch.randn(c, generator=gen, dtype=torch.float64) * 0.5)
                m.running_var.copy_(torch.rand(c, generator=gen, dtype=torch.float64) + 0.5)
                m.weight.copy_(torch.rand(c, generator=gen, dtype=torch.float64) + 0.5)
                m.bias.copy_(torch.randn(c, generator=gen, dtype=torch.float64))
            elif isinstance(m, (nn.Conv2d, nn.Linear)):
                m.weight.copy_(torch.randn(m.weight.shape, generator=gen, dtype=torch.float64)
                               * (1.0 / m.weight[0].numel()) ** 0.5)
                if m.bias is not None:
                    m.bias.copy_(torch.randn(m.bias.shape, generator=gen, dtype=torch.float64))
    return model


class DataDependent(nn.Module):
    """A forward that branches on the values of its input: neither torch.fx nor torch.export can
    capture it."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x):
        return self.conv(x) if x.sum() > 0 else x
