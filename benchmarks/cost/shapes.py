"""Conv layer shapes of the paper's wide models, and modules made of them.

Matrix view of a conv weight (c_out, c_in, kh, kw): c_out × c_in·kh·kw.
WRN-28-10 (CIFAR): 3×3 convs 160×1440, 320×2880, 640×5760 (+ first convs of stages, shortcuts).
ResNet-50 (ImageNet, torchvision layout): bottlenecks of widths 64-128-256-512 (3×3 convs up to
512×4608) with 1×1 expansions ×4 (up to 2048×512) and 1×1 downsampling shortcuts (up to 2048×1024).
"""
from __future__ import annotations

import torch
from torch import nn

Shape = tuple[int, int, int, int]


def resnet50_conv_shapes() -> list[Shape]:
    """The 53 conv weight shapes of torchvision's ResNet-50."""
    shapes: list[Shape] = [(64, 3, 7, 7)]
    c_in = 64
    for width, blocks in ((64, 3), (128, 4), (256, 6), (512, 3)):
        for b in range(blocks):
            shapes += [(width, c_in, 1, 1), (width, width, 3, 3), (4 * width, width, 1, 1)]
            if b == 0:
                shapes.append((4 * width, c_in, 1, 1))
            c_in = 4 * width
    return shapes


def square_family(channels: list[int]) -> list[Shape]:
    """3×3 convs c → c: matrices c × 9c (all 3×3 shapes of WRN-28-10's and ResNet-50's main paths)."""
    return [(c, c, 3, 3) for c in channels]


class ConvBank(nn.Module):
    """Bias-free Conv2d layers of the given weight shapes (default init), plus an optional Linear head;
    a stand-in for a model when only its parameters matter (optimizer-step costs)."""

    def __init__(self, shapes: list[Shape], head: tuple[int, int] | None = None, seed: int = 0):
        super().__init__()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.convs = nn.ModuleList(nn.Conv2d(ci, co, (kh, kw), bias=False) for co, ci, kh, kw in shapes)
            self.head = nn.Linear(head[1], head[0]) if head else None


def matrix_shape(shape: Shape) -> tuple[int, int]:
    return shape[0], shape[1] * shape[2] * shape[3]
