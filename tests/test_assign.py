"""Radii from the expected initialisation norm and the paper's region assignment (`sparsefw.constrain`)."""
import copy
import math

import pytest
import torch
from torch import nn

import sparsefw
from sparsefw.constraints import (GroupKSupportBall, KSparsePolytope, KSupportBall, L2Ball, NuclearBall,
                                  SpectralKSupportBall)
from sparsefw.radii import expected_init_norms, expected_norm_normal, expected_norm_uniform


def test_expected_uniform_norm_closed_forms():
    assert expected_norm_uniform(1, 0.7) == pytest.approx(0.35, rel=1e-10)  # E|x| = b/2
    square = (math.sqrt(2) + math.log(1 + math.sqrt(2))) / 3  # mean distance to the centre of [−1, 1]²
    assert expected_norm_uniform(2, 1.0) == pytest.approx(square, rel=1e-10)
    for n in (50, 10_000, 10 ** 7):  # delta method: √(n/3)(1 − 1/(10n) + O(n⁻²))
        expected = math.sqrt(n / 3) * (1 - 1 / (10 * n))
        assert expected_norm_uniform(n, 1.0) == pytest.approx(expected, rel=0.1 / n ** 2 + 1e-12)


def test_expected_normal_norm_closed_forms():
    assert expected_norm_normal(1, 2.0) == pytest.approx(2.0 * math.sqrt(2 / math.pi))
    assert expected_norm_normal(2, 1.0) == pytest.approx(math.sqrt(math.pi / 2))


class Scaled(nn.Module):
    """A layer torch knows nothing about: radii come from Monte Carlo over reset_parameters."""

    def __init__(self, n):
        super().__init__()
        self.gain = nn.Parameter(torch.empty(n))
        self.reset_parameters()

    def reset_parameters(self):
        nn.init.normal_(self.gain, std=0.5)

    def forward(self, x):
        return x * self.gain


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.Conv2d(8, 12, 3, groups=4, bias=False), nn.GroupNorm(4, 12), nn.ReLU(),
                             nn.Flatten(), nn.Linear(12 * 6 * 6, 20), Scaled(20), nn.LayerNorm(20), nn.Linear(20, 5))


def _monte_carlo_norms(model, samples=300):
    """Mean norms and their standard errors over fresh default initialisations of a copy."""
    clone = copy.deepcopy(model)
    draws = {name: [] for name, _ in clone.named_parameters()}
    with torch.no_grad():
        for _ in range(samples):
            for module in clone.modules():
                if hasattr(module, "reset_parameters"):
                    module.reset_parameters()
            for name, p in clone.named_parameters():
                draws[name].append(float(p.norm()))
    draws = {name: torch.tensor(d, dtype=torch.float64) for name, d in draws.items()}
    return {name: (float(d.mean()), float(d.std()) / math.sqrt(samples)) for name, d in draws.items()}


def test_init_norms_match_monte_carlo_and_leave_model_and_rng_alone():
    model = _net()
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    norms = expected_init_norms(model)
    assert torch.equal(torch.get_rng_state(), rng)
    assert all(torch.equal(v, weights[k]) for k, v in model.state_dict().items())

    torch.manual_seed(123)
    sampled = _monte_carlo_norms(model)
    for name, value in norms.items():
        mean, error = sampled[name]
        if mean == 0:
            assert value == 1.0, name  # zero-initialised tensors get 1.0
        elif name == "8.gain":  # Monte Carlo (100 draws) inside the library too
            assert abs(value - mean) <= 4 * 2 * error, name
            assert value == pytest.approx(expected_norm_normal(20, 0.5), rel=0.05)
        else:
            assert abs(value - mean) <= 4 * error + 1e-6 * mean, name
    assert norms["1.weight"] == pytest.approx(math.sqrt(8)) and norms["1.bias"] == 1.0


@pytest.mark.parametrize("layer", [nn.Linear(7, 3), nn.Conv1d(4, 6, 5), nn.Conv3d(2, 3, (1, 2, 3), groups=1),
                                   nn.ConvTranspose2d(4, 6, 3), nn.Embedding(9, 4, padding_idx=0)])
def test_analytic_layers_match_their_own_initialisation(layer):
    norms = expected_init_norms(layer)
    torch.manual_seed(1)
    sampled = _monte_carlo_norms(layer, samples=1000)
    for name, (mean, error) in sampled.items():
        assert abs(norms[name] - mean) <= 4 * error, name


def _cnn():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 10, 3), nn.BatchNorm2d(10), nn.ReLU(), nn.Conv2d(10, 20, 3), nn.ReLU(),
                         nn.Flatten(), nn.Linear(20 * 4 * 4, 30), nn.ReLU(), nn.Linear(30, 4))


CONV_WEIGHTS = {"0.weight", "3.weight"}
EXPECTED = {
    "k_support": (KSupportBall, KSupportBall), "k_sparse": (KSparsePolytope, KSparsePolytope),
    "l2": (L2Ball, L2Ball), "group_k_support": (GroupKSupportBall, L2Ball),
    "spectral_k_support": (SpectralKSupportBall, L2Ball), "nuclear": (NuclearBall, L2Ball),
}


@pytest.mark.parametrize("mode", sorted(EXPECTED))
def test_assignment_classes_and_radii(mode):
    """Rule "init": every region (1-D ones too) has radius width · E‖θ_init‖ (the default before issue 19),
    raised to the start's gauge where that is larger (weights hold the start; nuclear at width 4)."""
    model = _cnn()
    norms = expected_init_norms(model)
    start = {name: p.detach().clone() for name, p in model.named_parameters()}
    groups = sparsefw.constrain(model, mode, width=4.0, norm_radius="init", linear="l2")   # the paper's table
    assert [g["name"] for g in groups] == [n for n, _ in model.named_parameters()]
    conv_cls, other_cls = EXPECTED[mode]
    for g in groups:
        (p,), c, name = g["params"], g["constraint"], g["name"]
        assert type(c) is (conv_cls if name in CONV_WEIGHTS else other_cls), name
        assert c.shape == p.shape
        expected_radius = 4.0 * norms[name] / (math.sqrt(c.k) if isinstance(c, KSparsePolytope) else 1.0)
        if p.dim() > 1:
            expected_radius = max(expected_radius, float(c.norm(start[name])))
        assert c.radius == pytest.approx(expected_radius, rel=1e-12)
    sparsefw.SFW(groups)  # accepted: one parameter per region, feasible start


@pytest.mark.parametrize("mode", ["k_support", "k_sparse", "group_k_support"])
def test_bias_and_norm_l2_changes_only_the_1d_parameters(mode):
    model = _cnn()
    paper = {g["name"]: g["constraint"] for g in sparsefw.constrain(model, mode, width=4.0, norm_radius="init")}
    l2 = {g["name"]: g["constraint"] for g in sparsefw.constrain(model, mode, width=4.0, bias_and_norm="l2",
                                                                 norm_radius="init")}
    norms = expected_init_norms(model)
    for name, p in model.named_parameters():
        if p.dim() == 1:     # biases and BN γ/β: an L2 ball of radius width · E‖θ‖
            assert type(l2[name]) is L2Ball and l2[name].radius == pytest.approx(4.0 * norms[name], rel=1e-12)
        else:                # weights: exactly the mode's region
            assert type(l2[name]) is type(paper[name]) and l2[name].radius == paper[name].radius
            assert getattr(l2[name], "k", None) == getattr(paper[name], "k", None)


@pytest.mark.parametrize("mode,bias_and_norm", [("k_support", "mode"), ("k_sparse", "mode"),
                                                ("k_support", "l2"), ("spectral_k_support", "mode")])
def test_norm_radius_sets_the_radius_of_every_1d_region_only(mode, bias_and_norm):
    """norm_radius=r: every bias and BN γ/β region has radius r (K-sparse: vertex entries r/√k, so
    vertices have L2 norm r), region types and everything else unchanged."""
    model = _cnn()
    default = {g["name"]: g["constraint"] for g in sparsefw.constrain(model, mode, width=4.0, bias_and_norm=bias_and_norm)}
    got = {g["name"]: g["constraint"] for g in sparsefw.constrain(model, mode, width=4.0, bias_and_norm=bias_and_norm,
                                                                  norm_radius=0.5)}
    for name, p in model.named_parameters():
        assert type(got[name]) is type(default[name]), name
        if p.dim() == 1:
            scale = math.sqrt(got[name].k) if isinstance(got[name], KSparsePolytope) else 1.0
            assert got[name].radius * scale == pytest.approx(0.5, rel=1e-12), name
        else:
            assert got[name].radius == default[name].radius, name


DEFAULT_RULES = {"k_support": "width", "k_sparse": "width", "l2": "width", "group_k_support": "width",
                 "spectral_k_support": "width", "nuclear": "width",
                 "coupled_group_k_support": "width", "nm_k_support": "width",   # the 1-D parameters outside its joint regions
                 "spectral": "width", "spectral_polytope": "width"}     # the parameters outside matrix weights


def test_default_radius_rule_per_mode_is_pinned():
    """Issue 19 changed the default from "init" to "width" in every mode (BENCHMARKS.md radius_rule)."""
    from sparsefw.assign import DEFAULT_NORM_RADIUS
    assert DEFAULT_NORM_RADIUS == DEFAULT_RULES


@pytest.mark.parametrize("mode", sorted(EXPECTED))
def test_default_rule_equals_its_explicit_name_and_width_equals_the_number(mode):
    """norm_radius=None is the mode's rule, held at the start's gauge: the same radii as the rule asked
    by name ("width", = norm_radius=width) except where the start lies outside that radius (BN γ = 1 in a
    k-support ball of radius 4), whose region then has radius its gauge and is not scaled; weights keep
    width · E‖θ_init‖ or their gauge, the larger."""
    model = _cnn()
    norms = expected_init_norms(model)
    start = {name: p.detach().clone() for name, p in model.named_parameters()}
    regions = lambda **kw: {g["name"]: g["constraint"] for g in sparsefw.constrain(copy.deepcopy(model), mode, width=4.0, **kw)}  # noqa: E731
    default, named, number = regions(), regions(norm_radius=DEFAULT_RULES[mode]), regions(norm_radius=4.0)
    held = 0
    for name, p in model.named_parameters():
        assert named[name].radius == number[name].radius, name
        gauge = float(default[name].norm(start[name]))
        assert default[name].radius == pytest.approx(max(named[name].radius, gauge), rel=1e-12), name
        held += default[name].radius > named[name].radius
        scale = math.sqrt(default[name].k) if isinstance(default[name], KSparsePolytope) else 1.0
        expected = 4.0 if p.dim() == 1 else max(4.0 * norms[name], gauge * scale)
        assert named[name].radius * scale == pytest.approx(expected, rel=1e-12), name
    assert held == (mode in ("k_support", "k_sparse"))          # BN γ only: its k-support gauge C/√k > 4


def test_norm_radius_below_the_gamma_norm_scales_gamma_onto_the_ball():
    """BN γ = 1 (C = 10 channels) in a k-support ball with k = ⌊0.1·10⌋ = 1: the k-support norm of a
    constant vector c·1 is C·c/√k, so a radius r < 10 scales γ to r/10 in every channel."""
    model = _cnn()
    sparsefw.constrain(model, "k_support", k=0.1, norm_radius=2.5)
    torch.testing.assert_close(model[1].weight.detach(), torch.full((10,), 0.25))


def test_k_resolution_per_layer():
    model = _cnn()
    by_name = lambda groups: {g["name"]: g["constraint"] for g in groups}  # noqa: E731
    ks = by_name(sparsefw.constrain(model, "k_support", k=0.1))
    assert ks["0.weight"].k == 27 and ks["1.bias"].k == 1 and ks["6.weight"].k == 960  # ⌊0.1·n⌋, at least 1
    counts = by_name(sparsefw.constrain(model, "k_support", k=50))
    assert counts["0.weight"].k == 50 and counts["1.weight"].k == 10 and counts["8.bias"].k == 4  # capped at n
    groups = by_name(sparsefw.constrain(model, "group_k_support", k=0.3))
    assert groups["0.weight"].k == 3 and groups["3.weight"].k == 6  # filters
    ranks = by_name(sparsefw.constrain(model, "spectral_k_support", k=0.5))
    assert ranks["0.weight"].k == 5 and ranks["3.weight"].k == 10  # ranks min(c_out, c_in·kh·kw): 10, 20
    assert by_name(sparsefw.constrain(model, "spectral_k_support", k=1000))["3.weight"].k == 20
    assert by_name(sparsefw.constrain(model, "k_sparse"))["6.weight"].k == 960


def test_feasible_weights_are_untouched_and_infeasible_ones_projected():
    model = _cnn()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    sparsefw.constrain(model, "k_support", k=0.1, width=10.0)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())

    with torch.no_grad():
        model[6].weight.mul_(1000.0)
    inflated = model[6].weight.detach().clone()
    groups = {g["name"]: g["constraint"] for g in sparsefw.constrain(model, "k_support", k=0.1, width=10.0)}
    region = groups["6.weight"]
    assert float(region.norm(model[6].weight.detach())) == pytest.approx(region.radius, rel=1e-5)
    cosine = torch.nn.functional.cosine_similarity(model[6].weight.detach().reshape(-1), inflated.reshape(-1), dim=0)
    assert float(cosine) == pytest.approx(1.0, abs=1e-6)  # scaled, not rotated
    for k, v in model.state_dict().items():
        if k != "6.weight":
            assert torch.equal(v, before[k]), k


def test_constrain_keeps_global_rng_and_skips_frozen_and_shared():
    model = _net()
    model[0].bias.requires_grad_(False)
    shared = nn.Sequential(model, nn.Linear(5, 5))
    shared[1].weight = nn.Parameter(torch.zeros(5, 5))
    tied = nn.ModuleList([shared, shared[1]])  # the same Linear reached twice
    rng = torch.get_rng_state()
    groups = sparsefw.constrain(tied, "k_support")
    assert torch.equal(torch.get_rng_state(), rng)
    names = [g["name"] for g in groups]
    assert "0.0.0.bias" not in names
    assert len(groups) == sum(p.requires_grad for p in tied.parameters())
    assert sum(g["params"][0] is shared[1].weight for g in groups) == 1
    zero = next(g for g in groups if g["params"][0] is shared[1].weight)
    assert zero["constraint"].radius == pytest.approx(10.0 * expected_norm_uniform(25, 1 / math.sqrt(5)))


@pytest.mark.parametrize("kwargs,name", [
    (dict(mode="sparse"), "mode"), (dict(mode="l2", width=0.0), "width"),
    (dict(mode="l2", width=float("nan")), "width"),
    (dict(mode="l2", width=True), "width"), (dict(mode="k_support", k=0), "k"), (dict(mode="k_support", k=1.5), "k"),
    (dict(mode="k_support", bias_and_norm="L2"), "bias_and_norm"), (dict(mode="l2", norm_radius=0.0), "norm_radius"),
    (dict(mode="l2", norm_radius=True), "norm_radius"), (dict(mode="l2", norm_radius="paper"), "norm_radius"), (dict(mode="l2", norm_radius=float("inf")), "norm_radius"), (dict(mode="k_support", k=True), "k"), (dict(mode="k_support", k="10%"), "k"), (dict(mode="nuclear", k=-1), "k"),
])
def test_bad_arguments_raise_naming_them(kwargs, name):
    with pytest.raises(ValueError, match=name):
        sparsefw.constrain(_cnn(), **kwargs)
    with pytest.raises(ValueError, match="model"):
        sparsefw.constrain([nn.Linear(2, 2)], "l2")


def test_compress_is_reachable_from_the_package():
    assert sparsefw.compress.__name__ == "sparsefw.compress"
