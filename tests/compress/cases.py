"""The nets of the coupled-removal tests (tests/compress) and the channel-analysis tests
(tests/graph): name → (constructor, two input sizes), built seeded and randomized in float64."""
import torch

from nets import CifarResNet, ConcatNet, DepthwiseNet, PlainCNN, randomize
from zoo import ZOO

NETS = {**ZOO,
        "plain": (lambda: PlainCNN(spatial=8), [(8, 8), (8, 8)]),
        "cifar_resnet": (lambda: CifarResNet(blocks=1), [(16, 16), (12, 20)]),
        "depthwise": (DepthwiseNet, [(16, 16), (10, 12)]),
        "concat": (ConcatNet, [(16, 16), (11, 13)])}


def build(name):
    make, sizes = NETS[name]
    torch.manual_seed(0)
    return randomize(make()), sizes


def inputs(size, seed):
    return torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
