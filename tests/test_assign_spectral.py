"""`constrain(model, "spectral" | "spectral_polytope")`: operator-norm regions on matrix weights with
Scion's radii τ = spectral_width·√(d_out/d_in) and the fixed step, L2 balls elsewhere; the other modes
are unchanged by them."""
import math
import sys
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

import sparsefw
from sparsefw.assign_spectral import DEFAULT_OTHER_LR, DEFAULT_SPECTRAL_WIDTH
from sparsefw.assign_step import DEFAULT_FIXED_STEP
from sparsefw.constraints import L2Ball, SpectralBall, SpectralPolytope

sys.path.insert(0, str(Path(__file__).resolve().parent / "optim"))
from tiny_training import train  # noqa: E402


class Block(nn.Module):
    def __init__(self, d=8):
        super().__init__()
        self.ln = nn.LayerNorm(d)
        self.fc1, self.fc2 = nn.Linear(d, 2 * d), nn.Linear(2 * d, d)

    def forward(self, x):
        return x + self.fc2(torch.relu(self.fc1(self.ln(x))))


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 8), Block(), Block(), nn.LayerNorm(8), nn.Linear(8, 3))


def _groups(model, mode, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {g["name"]: g for g in sparsefw.constrain(model, mode, example_inputs=torch.randn(4, 5), **kwargs)}


@pytest.mark.parametrize("mode", ["spectral", "spectral_polytope"])
def test_matrix_weights_get_operator_norm_regions_with_scion_radii_and_the_fixed_step(mode):
    model = _model()
    groups = _groups(model, mode)
    for name, p in model.named_parameters():
        g = groups[name]
        if p.dim() == 2:
            expected = SpectralPolytope if mode == "spectral_polytope" and name != "4.weight" else SpectralBall
            assert type(g["constraint"]) is expected, name
            d_out, d_in = p.shape
            tau = DEFAULT_SPECTRAL_WIDTH * math.sqrt(d_out / d_in)      # at least the start's gauge: it holds the start
            assert g["constraint"].radius == pytest.approx(max(tau, float(g["constraint"].norm(p.detach()))), rel=1e-6)
            assert g["lr"] == DEFAULT_FIXED_STEP and g["rescale"] is None and g["direction"] == "adam"
            if expected is SpectralPolytope:
                assert g["constraint"].k == max(1, min(p.shape) // 4)
        else:
            assert isinstance(g["constraint"], L2Ball), name
            assert (g["direction"], g["lr"], g["rescale"]) == ("adam", DEFAULT_OTHER_LR, "gradient"), name


def test_options_k_width_step_and_checkpoint_rule():
    model = _model()
    groups = _groups(model, "spectral_polytope", k=2, spectral_width=1.5, fixed_step=0.05)
    c = groups["1.fc1.weight"]["constraint"]
    w = model.get_parameter("1.fc1.weight").detach()
    assert c.k == 2 and groups["1.fc1.weight"]["lr"] == 0.05
    assert c.radius == pytest.approx(max(1.5 * math.sqrt(2), float(c.norm(w))), rel=1e-6)
    groups = _groups(model, "spectral", fixed_step="optimizer")
    assert not any({"lr", "rescale", "direction"} & set(g) for g in groups.values())
    before = [p.detach().clone() for p in model.parameters()]
    groups = _groups(model, "spectral", radius_rule="checkpoint")
    assert groups["1.fc1.weight"]["constraint"].radius == pytest.approx(
        DEFAULT_SPECTRAL_WIDTH * float(torch.linalg.matrix_norm(w, ord=2)), rel=1e-5)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_conv_weights_take_the_matrix_view():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 4, 3), nn.Flatten(),
                          nn.Linear(4 * 4 * 4, 2))
    groups = _groups_conv(model)
    c = groups["3.weight"]["constraint"]
    w = dict(model.named_parameters())["3.weight"].detach()
    assert isinstance(c, SpectralPolytope) and c.radius == pytest.approx(max(3.0 * math.sqrt(4 / 72), float(c.norm(w))))
    assert isinstance(groups["5.weight"]["constraint"], SpectralBall)


def _groups_conv(model):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {g["name"]: g for g in sparsefw.constrain(model, "spectral_polytope",
                                                         example_inputs=torch.randn(2, 3, 8, 8))}


def test_sfw_trains_and_stays_feasible():
    model = _model()
    opt = sparsefw.SFW(list(_groups(model, "spectral_polytope").values()))
    x, y = torch.randn(64, 5, generator=torch.Generator().manual_seed(1)), torch.randint(0, 3, (64,))
    losses = train(model, opt, [(x, y)] * 30)
    assert losses[-1] < losses[0]
    for g in opt.param_groups:
        assert float(g["constraint"].norm(g["params"][0].detach())) <= g["constraint"].radius * (1 + 1e-5)
    state = opt.state_dict()
    assert {g["constraint"]["type"] for g in state["param_groups"]} == {"SpectralBall", "SpectralPolytope", "L2Ball"}


def test_other_modes_are_unchanged_and_spectral_width_is_checked():
    model = _model()
    for mode in ("k_support", "spectral_k_support"):
        groups = _groups(model, mode)
        assert not any(isinstance(g["constraint"], (SpectralBall, SpectralPolytope)) for g in groups.values())
    with pytest.raises(ValueError, match="spectral_width"):
        _groups(model, "k_support", spectral_width=2.0)
    for bad in (0.0, -1.0, float("inf"), True):
        with pytest.raises(ValueError, match="spectral_width"):
            _groups(model, "spectral", spectral_width=bad)


@pytest.mark.parametrize("mode", ["spectral", "spectral_polytope"])
def test_transformer_zoo_matrix_weights_step_and_stay_feasible(mode):
    """On the library-style transformers (tests/compress/transformer_zoo.py: nn.Linear, Conv1D, heads tied
    to embeddings) every Linear-like weight gets an operator-norm region, the checkpoint rule keeps
    the model's output, and one SFW step stays feasible."""
    sys.path.insert(0, str(Path(__file__).resolve().parent / "compress"))
    from transformer_zoo import ZOO, build
    from sparsefw.assign_spectral import matrix_weights
    for name in sorted(ZOO):
        model, x = build(name, pretrained=True)
        model.double()
        with torch.no_grad():
            before = model(x)
        groups = _groups_on(model, mode, x)
        with torch.no_grad():
            assert torch.equal(model(x), before), name
        regions = {g["name"]: g["constraint"] for g in groups}
        assert all(isinstance(regions[w], (SpectralBall, SpectralPolytope)) for w in matrix_weights(model)), name
        opt = sparsefw.SFW(groups)
        model(x).pow(2).mean().backward()
        opt.step()
        for g in groups:
            assert float(g["constraint"].norm(g["params"][0].detach())) <= g["constraint"].radius * (1 + 1e-9), name


def _groups_on(model, mode, x):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return sparsefw.constrain(model, mode, example_inputs=x, radius_rule="checkpoint")


@pytest.mark.parametrize("mode", ["spectral", "spectral_polytope"])
def test_a_checkpoint_start_takes_the_fine_tune_step_unless_a_step_or_rule_is_asked(mode):
    """Radii from a checkpoint (a LayerNorm moved: rule "auto" finds it) give the matrix groups
    DEFAULT_FINETUNE_STEP; a fresh model, rule "init" or an explicit fixed_step keep theirs."""
    from sparsefw.assign_spectral import DEFAULT_FINETUNE_STEP
    from sparsefw.models import build_model
    model, x = build_model("vit", 10, 1, 28, seed=0, dim=16, heads=2, mlp=32), torch.randn(2, 1, 28, 28)

    def matrix_steps(**options):
        groups = sparsefw.constrain(model, mode, example_inputs=x, **options)
        return {g["lr"] for g in groups if isinstance(g["constraint"], (SpectralBall, SpectralPolytope))}
    assert matrix_steps() == {DEFAULT_FIXED_STEP}
    with torch.no_grad():
        model.layernorm.weight.mul_(1.1)                # trained: a norm layer's γ moved
    assert matrix_steps() == {DEFAULT_FINETUNE_STEP} == matrix_steps(radius_rule="checkpoint")
    assert matrix_steps(radius_rule="init") == {DEFAULT_FIXED_STEP}
    assert matrix_steps(fixed_step=0.05) == {0.05}
