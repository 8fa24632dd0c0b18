"""constrain(model, "nm_k_support"): N:M regions on conv and Linear-like weights over the groups
that prune(pattern="N:M") masks, radii from the expected init norm, k as 'N:M', fraction or count."""
import warnings

import pytest
import torch
from torch import nn

import sparsefw
from sparsefw.constraints import L2Ball, NMKSupportBall
from sparsefw.radii import expected_init_norms


class Conv1D(nn.Module):
    """A Hugging Face-style Conv1D: weight stored (in, out)."""

    def __init__(self, nf, nx):
        super().__init__()
        self.nf = nf
        self.weight = nn.Parameter(torch.randn(nx, nf) * 0.02)
        self.bias = nn.Parameter(torch.zeros(nf))

    def forward(self, x):
        return x @ self.weight + self.bias


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 4 * 4, 16),
                         nn.ReLU(), Conv1D(12, 16), nn.ReLU(), nn.Linear(12, 4))


def _groups(model, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {g["name"]: g["constraint"] for g in sparsefw.constrain(model, "nm_k_support", fixed_step="optimizer",
                                                                        **kwargs)}


def test_regions_dims_and_radii():
    model = _net()
    norms = expected_init_norms(model)
    regions = _groups(model, width=5.0, norm_radius="init")
    dims = {"0.weight": 1, "4.weight": 1, "6.weight": 0, "8.weight": 1}      # the head too: prune masks it
    for name, region in regions.items():
        if name in dims:
            assert type(region) is NMKSupportBall and region.dim == dims[name] and region.pattern == "2:4", name
            assert region.combine == "l2" and region.diameter == 2 * region.radius
        else:
            assert type(region) is L2Ball, name
        assert region.radius == pytest.approx(5.0 * norms[name], rel=1e-12)


@pytest.mark.parametrize("k,pattern", [(None, "2:4"), ("1:8", "1:8"), (0.5, "2:4"), (0.25, "1:4"), (0.1, "1:4"),
                                       (3, "3:4"), ("4:4", "4:4")])
def test_k_forms(k, pattern):
    assert _groups(_net(), k=k)["4.weight"].pattern == pattern


@pytest.mark.parametrize("k,match", [(5, "k=5"), (124, "base-60"), ("2-4", "k='2-4'"), ("5:4", "k='5:4'"), (0, "k=0")])
def test_bad_k(k, match):
    with pytest.raises(ValueError, match=match):
        sparsefw.constrain(_net(), "nm_k_support", k=k, fixed_step="optimizer")


def test_pattern_k_rejected_in_other_modes():
    with pytest.raises(ValueError, match="nm_k_support"):
        sparsefw.constrain(_net(), "k_support", k="2:4", fixed_step="optimizer")


def test_a_full_step_lands_on_a_vertex_that_prune_pattern_leaves_as_it_is():
    """With η = 1 the weights become LMO vertices, N:M-sparse in the groups prune(pattern) uses."""
    model = _net()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        groups = sparsefw.constrain(model, "nm_k_support", fixed_step="optimizer")
    opt = sparsefw.SFW(groups, lr=1.0, momentum=0.0, rescale=None)
    x, y = torch.randn(8, 3, 6, 6), torch.randint(0, 4, (8,))
    nn.functional.cross_entropy(model(x), y).backward()
    opt.step()
    with pytest.warns(UserWarning, match="already 2:4"):
        pruned = sparsefw.compress.prune(model, pattern="2:4")
    for name in ("0.weight", "4.weight", "8.weight"):
        w = model.get_parameter(name)
        assert torch.equal(pruned.get_parameter(name), w), name
        assert torch.count_nonzero(w) <= (w.numel() / 2 if name != "0.weight" else w.numel() * 2 / 3)  # 3 inputs
    rescaled = sparsefw.SFW(sparsefw.constrain(_net(), "nm_k_support", fixed_step="optimizer"), lr=0.1)
    for _ in range(3):                                   # gradient-rescaled steps stay feasible
        rescaled.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        rescaled.step()


def test_config_takes_a_quoted_pattern_and_names_the_unquoted_one():
    from sparsefw.experiments.config import ConfigError, validate

    assert validate({"optimizer": {"mode": "nm_k_support", "k": "2:4"}}).optimizer.k == "2:4"
    assert validate({"optimizer": {"mode": "k_support", "k": "5e-2"}}).optimizer.k == 0.05   # YAML 1.1's string
    for raw, match in [({"mode": "nm_k_support", "k": 124}, "base-60"), ({"mode": "k_support", "k": "2:4"}, "only"),
                       ({"mode": "nm_k_support", "k": "2/4"}, "N:M")]:
        with pytest.raises(ConfigError, match=match):
            validate({"optimizer": raw})
