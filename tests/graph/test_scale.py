"""`graph.scale.scale_invariant_parameters` against the definition: the model's training-mode output
does not change when the parameter (a norm layer's γ and β: both together) is multiplied by c > 0."""
import pytest
import torch
from torch import nn

from nets import CifarResNet, ConcatNet, DepthwiseNet, PlainCNN
from sparsefw.graph.scale import scale_invariant_parameters
from sparsefw.models import build_model
from zoo import ZOO, first_tensor


class ReluThenNorm(nn.Module):
    """conv (no bias) → ReLU → max-pool → BN (a homogeneous chain), Linear → LayerNorm with and without bias."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(6)
        self.free = nn.Linear(6, 8, bias=False)
        self.biased = nn.Linear(6, 8)
        self.ln_free, self.ln_biased = nn.LayerNorm(8), nn.LayerNorm(8)
        self.head = nn.Linear(16, 4)

    def forward(self, x):
        h = self.bn(nn.functional.max_pool2d(torch.relu(self.conv(x)), 2)).mean((2, 3))
        return self.head(torch.cat([self.ln_free(self.free(h)), self.ln_biased(self.biased(h))], 1))


MODELS = {
    **{name: (build, sizes[0]) for name, (build, sizes) in ZOO.items()},
    "plain": (lambda: PlainCNN(spatial=8), (8, 8)),
    "cifar_resnet": (lambda: CifarResNet(blocks=1), (16, 16)),
    "depthwise": (DepthwiseNet, (16, 16)),
    "concat": (ConcatNet, (16, 16)),
    "cnn": (lambda: build_model("cnn", 10, 1, widths=[4, 4, 8, 8]), (8, 8)),
    "mlp": (lambda: build_model("mlp", 10, 1, image_size=8), (8, 8)),
    "relu_then_norm": (ReluThenNorm, (8, 8)),
}
_NORMS = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm)


def _input(model: nn.Module, size) -> torch.Tensor:
    first = next(m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))
    channels = first.in_channels if isinstance(first, nn.Conv2d) else 1
    return torch.randn(6, channels, *size, generator=torch.Generator().manual_seed(0), dtype=torch.float64)


def _units(model: nn.Module) -> list[list[str]]:
    """Every parameter alone, but a norm layer's γ and β together (their joint scale is the unit)."""
    units, seen = [], set()
    for module_name, module in model.named_modules():
        if isinstance(module, _NORMS):
            names = [f"{module_name}.{n}" if module_name else n for n, _ in module.named_parameters(recurse=False)]
            if names:
                units.append(names)
                seen.update(names)
    return units + [[n] for n, _ in model.named_parameters() if n not in seen]


def _changes_when_scaled(model: nn.Module, x: torch.Tensor, names: list[str]) -> float:
    """Relative change of the training-mode output when the parameters `names` are multiplied by 3."""
    params = dict(model.named_parameters())
    model.train()
    with torch.no_grad():
        torch.manual_seed(1)     # the same dropout masks in both calls
        base = first_tensor(model(x)).clone()
        for n in names:
            params[n].mul_(3.0)
        torch.manual_seed(1)
        scaled = first_tensor(model(x))
        for n in names:
            params[n].div_(3.0)
    return float((scaled - base).norm() / base.norm())


@pytest.mark.parametrize("name", list(MODELS))
def test_every_found_unit_is_scale_invariant(name):
    """Sound on every model: what is found does not change the output when scaled (γ and β are found
    together or not at all). The rule is conservative (it follows no concat or add), so a unit that
    is invariant may be missed; the hand-built nets below pin down what must be found."""
    build, size = MODELS[name]
    torch.manual_seed(0)
    model = build().double()
    for m in model.modules():  # ε-free normalisations, so invariance is exact up to rounding
        if isinstance(m, _NORMS):
            m.eps = 1e-30
            with torch.no_grad():
                for p in m.parameters(recurse=False):
                    p.uniform_(0.5, 1.5)
    x = _input(model, size)
    found = scale_invariant_parameters(model, x)
    for unit in _units(model):
        if any(n in found for n in unit):
            assert all(n in found for n in unit), unit
            assert _changes_when_scaled(model, x, unit) < 1e-6, unit
    if any(isinstance(m, nn.BatchNorm2d) for m in model.modules()):   # conv → BN is the common case
        assert any(n.endswith("weight") and n not in {u[0] for u in _units(model) if len(u) > 1} for n in found)


def test_known_answers_on_hand_built_nets():
    found = scale_invariant_parameters(ReluThenNorm(), torch.randn(2, 3, 8, 8))
    assert found == {"conv.weight", "free.weight"}      # biased Linear → LayerNorm keeps its scale
    cnn = build_model("cnn", 10, 1, widths=[4, 4, 8, 8])
    found = scale_invariant_parameters(cnn, torch.randn(2, 1, 8, 8))
    convs = [n for n, m in cnn.named_modules() if isinstance(m, nn.Conv2d)]
    norms = [n for n, m in cnn.named_modules() if isinstance(m, nn.BatchNorm2d)]
    # every conv feeds a BN; every BN but the last (read by the classifier) feeds a normalised conv
    assert {f"{c}.weight" for c in convs} <= found
    assert {f"{b}.{p}" for b in norms[:-1] for p in ("weight", "bias")} <= found
    assert not any(n.startswith(norms[-1] + ".") or n.startswith("classifier") for n in found)
    assert scale_invariant_parameters(build_model("mlp", 10, 1, image_size=8), torch.randn(2, 1, 8, 8)) == set()


def test_a_tied_weight_is_never_reported():
    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(4, 4, bias=False)
            self.norm = nn.LayerNorm(4, elementwise_affine=False)

        def forward(self, x):
            return self.norm(self.a(x)) + self.a(x)

    assert scale_invariant_parameters(Tied(), torch.randn(2, 4)) == set()
