"""`constrain`'s direction: Adam's direction and step length where asked and in the spectral modes, the
momentum and the paper's steps elsewhere (also on transformers: measured, docs/tuning.md)."""
import sys
from pathlib import Path

import pytest
import torch

import sparsefw
from sparsefw.assign_spectral import OTHER_STEP
from sparsefw.models import build_model

sys.path.insert(0, str(Path(__file__).resolve().parent / "optim"))
from tiny_training import train  # noqa: E402

STEP_KEYS = ("direction", "lr", "rescale")


def _vit():
    return build_model("vit", 10, 1, 28, seed=0, dim=16, heads=2, mlp=32), torch.randn(2, 1, 28, 28)


def _cnn():
    return build_model("cnn", 4, 1, seed=0, widths=[4, 4, 8, 8]), torch.randn(2, 1, 8, 8)


def _steps(groups):
    return {g["name"]: {k: g[k] for k in STEP_KEYS if k in g} for g in groups}


@pytest.mark.parametrize("mode", ["k_support", "group_k_support", "spectral_k_support", "nm_k_support",
                                  "coupled_group_k_support"])
def test_adam_gives_every_group_adams_step_and_auto_keeps_the_momentum_outside_the_spectral_modes(mode):
    model, x = _vit()
    groups = sparsefw.constrain(model, mode, example_inputs=x, direction="adam")
    assert all({k: g[k] for k in STEP_KEYS} == OTHER_STEP for g in groups)
    if mode == "coupled_group_k_support":
        assert any("+" in g["name"] for g in groups)        # the coupled groups lost their fixed step too
    auto = sparsefw.constrain(model, mode, example_inputs=x)
    assert _steps(auto) == _steps(sparsefw.constrain(model, mode, example_inputs=x, direction="momentum"))
    assert not any("direction" in g for g in auto)


@pytest.mark.parametrize("mode", ["k_support", "coupled_group_k_support"])
def test_adam_is_the_momentum_groups_with_adams_step_the_benchmarks_rest_adam(mode):
    """direction "adam" = the groups of direction "momentum" with OTHER_STEP written over every one
    (what bench_transformers' `rest=adam` does): same regions, same radii."""
    model, x = _vit()
    adam = sparsefw.constrain(model, mode, example_inputs=x, direction="adam")
    momentum = sparsefw.constrain(model, mode, example_inputs=x, direction="momentum")
    assert [g["name"] for g in adam] == [g["name"] for g in momentum]
    for a, m in zip(adam, momentum):
        assert {k: v for k, v in a.items() if k not in STEP_KEYS} == \
               {k: v for k, v in m.items() if k not in STEP_KEYS} | {"constraint": a["constraint"]}
        assert type(a["constraint"]) is type(m["constraint"]) and a["constraint"].radius == m["constraint"].radius
        assert all(x is y for x, y in zip(a["params"], m["params"]))
        assert "direction" not in m


def test_a_cnn_keeps_the_momentum_and_the_step_rule():
    model, x = _cnn()
    auto = _steps(sparsefw.constrain(model, "k_support", example_inputs=x))
    assert auto == _steps(sparsefw.constrain(model, "k_support", example_inputs=x, direction="momentum"))
    assert not any("direction" in s for s in auto.values()) and any(s.get("lr") == 0.02 for s in auto.values())
    forced = _steps(sparsefw.constrain(model, "k_support", example_inputs=x, direction="adam"))
    assert all(s == OTHER_STEP for s in forced.values())


def test_an_asked_fixed_step_keeps_the_momentum_and_explicit_adam_refuses_it():
    model, x = _vit()
    groups = sparsefw.constrain(model, "coupled_group_k_support", example_inputs=x, coupled_step=0.05)
    assert not any("direction" in g for g in groups) and all(g["lr"] == 0.05 for g in groups if "+" in g["name"])
    with pytest.raises(ValueError, match="direction='adam'.*coupled_step"):
        sparsefw.constrain(model, "k_support", example_inputs=x, fixed_step=0.01, direction="adam")
    with pytest.raises(ValueError, match="direction must be one of"):
        sparsefw.constrain(model, "k_support", example_inputs=x, direction="sgd")


def test_the_spectral_modes_take_adam_on_any_net_and_momentum_when_asked():
    for model, x in (_vit(), _cnn()):
        groups = sparsefw.constrain(model, "spectral_polytope", example_inputs=x)
        matrix = [g for g in groups if type(g["constraint"]).__name__.startswith("Spectral")]
        assert matrix and all(g["direction"] == "adam" and g["rescale"] is None for g in matrix)
        momentum = sparsefw.constrain(model, "spectral_polytope", example_inputs=x, direction="momentum")
        assert not any("direction" in g for g in momentum)
        assert all(g["lr"] == 0.02 for g in momentum if type(g["constraint"]).__name__.startswith("Spectral"))
    model, x = _vit()
    to_optimizer = sparsefw.constrain(model, "spectral", example_inputs=x, fixed_step="optimizer")
    assert not any(k in g for g in to_optimizer for k in STEP_KEYS)


def test_adam_trains_a_transformer_from_the_groups_alone():
    """SFW(constrain(vit, "k_support", x, direction="adam")) with nothing else set runs Adam's direction
    (state exp_avg_sq) and lowers the loss of a fixed batch."""
    model, x = _vit()
    y = torch.tensor([1, 3])
    opt = sparsefw.SFW(sparsefw.constrain(model, "k_support", example_inputs=x, direction="adam"))
    losses = train(model, opt, [(x, y)] * 30)
    assert losses[-1] < 0.5 * losses[0]
    assert all("exp_avg_sq" in s for s in opt.state.values())
