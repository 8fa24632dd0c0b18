"""A tiny BN conv net on random 2×8×8 inputs, and a plain training loop, for optimizer tests (the tests
outside tests/optim import it from there too)."""
import torch
from torch import nn


def small_cnn(hidden: int, out_conv: int, classes: int) -> nn.Sequential:
    """Conv(2→hidden, 3) BN ReLU Conv(hidden→out_conv, 3) ReLU Flatten Linear, seeded (same weights
    for the same arguments)."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(2, hidden, 3), nn.BatchNorm2d(hidden), nn.ReLU(), nn.Conv2d(hidden, out_conv, 3),
                         nn.ReLU(), nn.Flatten(), nn.Linear(out_conv * 4 * 4, classes))


def random_batches(n: int, classes: int, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    return [(torch.randn(8, 2, 8, 8, generator=gen), torch.randint(0, classes, (8,), generator=gen))
            for _ in range(n)]


def train(model: nn.Module, opt: torch.optim.Optimizer, batches) -> list[float]:
    """One cross-entropy step per (x, y) of `batches`; the loss before each step."""
    losses = []
    for x, y in batches:
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses
