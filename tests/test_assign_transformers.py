"""`constrain` on transformers written the way model libraries write them (tests/compress/transformer_zoo.py):
regions that hold the starting point (radius_rule="checkpoint"; norm-layer scales never shrunk), the
warning naming every tensor scaled at set-up, and structured regions for hidden Linear layers."""
import math
import sys
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent / "compress"))

import sparsefw  # noqa: E402
from sparsefw.assign import RescaledWarning  # noqa: E402
from sparsefw.assign_linear import hidden_linear_weights  # noqa: E402
from sparsefw.constraints import (CoupledGroupKSupportBall, GroupKSupportBall, L2Ball, NuclearBall,  # noqa: E402
                                  SpectralKSupportBall)
from transformer_zoo import ZOO, build  # noqa: E402

MODES = ("k_support", "k_sparse", "l2", "group_k_support", "spectral_k_support", "nuclear", "coupled_group_k_support",
         "nm_k_support")


def _constrain(model, x, mode, **kwargs):
    """constrain on `model` (example_inputs only where the mode needs them), with the warnings it gave."""
    inputs = {"example_inputs": x} if mode == "coupled_group_k_support" else {}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        groups = sparsefw.constrain(model, mode, fixed_step="optimizer", **inputs, **kwargs)
    return groups, [w for w in caught if issubclass(w.category, RescaledWarning)]


def _relative_change(model, x, before):
    with torch.no_grad():
        return float((model(x) - before).norm() / before.norm())


def is_norm_scale_layer(module) -> bool:
    """LayerNorm, RMSNorm and GroupNorm layers, the libraries' own classes (by class name) included:
    the norms of transformers, whose γ, β no region may shrink at set-up unless norm_radius is asked."""
    norms = (nn.LayerNorm, nn.GroupNorm) + ((nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ())
    return isinstance(module, norms) or type(module).__name__.endswith(("LayerNorm", "RMSNorm", "GroupNorm"))


def _norm_scale_tensors(model):
    return {f"{m}.{n}": p.detach().clone() for m, module in model.named_modules() if is_norm_scale_layer(module)
            for n, p in module.named_parameters(recurse=False)}


@pytest.mark.parametrize("pretrained", [False, True], ids=["fresh", "pretrained_like"])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", sorted(ZOO))
def test_checkpoint_rule_leaves_every_zoo_model_unchanged(name, mode, pretrained):
    """radius_rule="checkpoint": every region holds its tensor, so the output is what it was (float64),
    with the paper's Linear regions and with the structured ones, and nothing is reported."""
    for linear in ("l2", "structured"):
        model, x = build(name, pretrained)
        with torch.no_grad():
            before = model(x)
        groups, rescaled = _constrain(model, x, mode, radius_rule="checkpoint", linear=linear)
        assert _relative_change(model, x, before) <= 1e-6 and not rescaled, (linear, rescaled)
        for g in groups:
            region = g["constraint"]
            values = [p.detach() for p in g["params"]]
            point = region.pack(values) if len(values) > 1 or isinstance(region, CoupledGroupKSupportBall) else values[0]
            assert float(region.norm(point)) <= region.radius, g["name"]


@pytest.mark.parametrize("pretrained", [False, True], ids=["fresh", "pretrained_like"])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", sorted(ZOO))
def test_default_options_leave_every_zoo_model_unchanged(name, mode, pretrained):
    """Default options (radius_rule "auto", every region holding its start): the output of a fresh and of
    a pretrained-like model is what it was and nothing is reported — in k_support mode LayerNorm γ = 1
    used to be scaled to 10/(its k-support norm) (36–48 % output change), and with the "init" rule the
    pretrained-like weights 70–100 %. LayerNorm/RMSNorm γ, β stay bit-identical."""
    model, x = build(name, pretrained)
    scales = _norm_scale_tensors(model)
    assert scales  # every zoo model has norm layers
    with torch.no_grad():
        before = model(x)
    _, rescaled = _constrain(model, x, mode)
    for key, value in _norm_scale_tensors(model).items():
        assert torch.equal(value, scales[key]), key
    assert _relative_change(model, x, before) <= 1e-6 and not rescaled


def test_an_explicit_radius_excludes_the_start_and_the_warning_names_every_tensor():
    """Pretrained-like GPT-2 in k_support mode with norm_radius=10 (asked): biases and LN γ, β of norm > 10
    are scaled onto their balls; the one warning names exactly the changed tensors with their factors."""
    model, x = build("gpt2", pretrained=True)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    _, rescaled = _constrain(model, x, "k_support", norm_radius=10.0)
    changed = {n: float(p.detach().norm() / before[n].norm()) for n, p in model.named_parameters()
               if not torch.equal(p.detach(), before[n])}
    assert changed and len(rescaled) == 1
    assert all(before[n].dim() == 1 for n in changed)          # weights hold their start under any rule
    message = str(rescaled[0].message)
    assert f"{len(changed)} tensor(s)" in message
    for n, factor in changed.items():
        assert f"{n} ×{factor:.4g}" in message, (n, factor)
    model, _ = build("gpt2", pretrained=True)
    assert not _constrain(model, x, "k_support", radius_rule="init")[1]


def _bn_net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 20, 3), nn.BatchNorm2d(20), nn.ReLU(), nn.Conv2d(20, 12, 3),
                         nn.GroupNorm(4, 12), nn.ReLU(), nn.Flatten(), nn.Linear(12 * 4 * 4, 16), nn.ReLU(),
                         nn.Linear(16, 4))


def test_batchnorm_gamma_is_held_by_default_and_shrunk_when_asked():
    """k_support, k = ⌊0.1·C⌋: the k-support norm of γ = 1 is C/√k. By default every region holds its
    start: BN (C = 20, k = 2) gets radius 14.1 instead of width = 10, GroupNorm (C = 12, k = 1) 12, nothing
    scaled. norm_radius="width" asks for the paper code's rule: BN and GroupNorm γ scaled onto radius 10,
    with one warning naming both (under radius_rule "checkpoint" too: an asked 1-D radius holds there)."""
    model = _bn_net()
    groups, rescaled = _constrain(model, None, "k_support")
    radii = {g["name"]: g["constraint"].radius for g in groups}
    assert torch.equal(model[1].weight.detach(), torch.ones(20)) and torch.equal(model[4].weight.detach(), torch.ones(12))
    assert radii["1.weight"] == pytest.approx(20 / math.sqrt(2)) and radii["4.weight"] == pytest.approx(12.0)
    assert not rescaled
    for rule in ("init", "checkpoint"):
        model = _bn_net()
        groups, rescaled = _constrain(model, None, "k_support", norm_radius="width", radius_rule=rule)
        torch.testing.assert_close(model[1].weight.detach(), torch.full((20,), 10 / (20 / math.sqrt(2))))
        torch.testing.assert_close(model[4].weight.detach(), torch.full((12,), 10 / 12))
        assert len(rescaled) == 1 and str(rescaled[0].message).count("×") == 2
        assert f"1.weight ×{10 / (20 / math.sqrt(2)):.4g}" in str(rescaled[0].message)


def test_checkpoint_radii_are_width_times_the_gauge_zero_tensors_keep_the_init_radius():
    model, x = build("bert", pretrained=False)   # biases and LN β are 0 when fresh
    init = {g["name"]: g["constraint"].radius for g in _constrain(model, x, "k_sparse", width=3.0)[0]}
    model, x = build("bert", pretrained=False)
    for g in _constrain(model, x, "k_sparse", width=3.0, radius_rule="checkpoint")[0]:
        (p,), region = g["params"], g["constraint"]
        gauge = float(region.norm(p.detach()))
        expected = 3.0 * gauge if gauge > 0 else init[g["name"]]
        assert region.radius == pytest.approx(expected, rel=1e-12), g["name"]
    model, x = build("bert", pretrained=True)
    groups, rescaled = _constrain(model, x, "l2", radius_rule="checkpoint", norm_radius=0.5)
    for g in groups:
        if g["params"][0].dim() == 1:   # an explicit number holds under the checkpoint rule too
            assert g["constraint"].radius == 0.5
    assert len(rescaled) == 1 and "embeddings_norm.weight" in str(rescaled[0].message)


HIDDEN = {  # name: (hidden weights, output dim), heads and tied embeddings excluded
    "gpt2": ({f"h.{i}.{n}.weight" for i in range(2) for n in ("c_attn", "attn_proj", "c_fc", "mlp_proj")}, 1),
    "nanogpt": ({f"transformer.h.{i}.{n}.weight" for i in range(2) for n in ("c_attn", "c_proj", "c_fc", "mlp_proj")}, 0),
    "llama": ({f"layers.{i}.{n}_proj.weight" for i in range(2) for n in ("q", "k", "v", "o", "gate", "up", "down")}, 0),
    "torch_encoder": ({f"encoder.layers.{i}.{n}.weight" for i in range(2)
                       for n in ("self_attn.out_proj", "linear1", "linear2")}, 0),
}


@pytest.mark.parametrize("name", sorted(HIDDEN))
def test_hidden_linear_layers_exclude_heads_and_tied_embeddings(name):
    model, _ = build(name)
    names, dim = HIDDEN[name]
    assert hidden_linear_weights(model) == dict.fromkeys(names, dim)


@pytest.mark.parametrize("mode,linear_cls,conv1d_cls", [
    ("group_k_support", GroupKSupportBall, CoupledGroupKSupportBall),
    ("spectral_k_support", SpectralKSupportBall, SpectralKSupportBall), ("nuclear", NuclearBall, NuclearBall)])
def test_structured_regions_of_hidden_linear_and_conv1d_weights(mode, linear_cls, conv1d_cls):
    """linear="structured" (default): hidden weights get the mode's structured region, everything else the
    paper's (heads, embeddings: L2 balls); "l2" is the paper's table."""
    for name, cls in (("nanogpt", linear_cls), ("gpt2", conv1d_cls)):
        model, x = build(name)
        paper = {g["name"]: g["constraint"] for g in _constrain(model, x, mode, linear="l2")[0]}
        structured = {g["name"]: g["constraint"] for g in _constrain(model, x, mode)[0]}
        for n, region in structured.items():
            expected = cls if n in HIDDEN[name][0] else type(paper[n])
            assert type(region) is expected, n
        assert all(type(r) is L2Ball for r in paper.values())  # no convs: the paper's table is all L2


def test_conv1d_group_region_selects_output_units_and_sfw_steps_it():
    """GPT-2's c_fc weight is (in 16, out 64): a group-k-support vertex (k = ⌊0.3·64⌋ = 19) is nonzero
    on 19 columns (output units) and every row; one SFW step keeps every parameter in its region."""
    model, x = build("gpt2", pretrained=True)
    groups, _ = _constrain(model, x, "group_k_support", linear="structured", radius_rule="checkpoint")
    region = next(g["constraint"] for g in groups if g["name"] == "h.0.c_fc.weight")
    vertex = region.unpack(region.lmo(torch.randn(region.shape, dtype=torch.float64)))[0]
    assert vertex.shape == (16, 64) and region.k == 19
    assert int((vertex.abs().sum(0) > 0).sum()) == 19 and bool((vertex.abs().sum(1) > 0).all())
    optimizer = sparsefw.SFW(groups, lr=0.1)
    model(x).square().mean().backward()
    optimizer.step()
    for g in groups:
        point = g["constraint"].pack([p.detach() for p in g["params"]]) if isinstance(
            g["constraint"], CoupledGroupKSupportBall) else g["params"][0].detach()
        assert float(g["constraint"].norm(point)) <= g["constraint"].radius * (1 + 1e-9), g["name"]


def test_structured_linear_on_a_cnn_changes_only_its_hidden_linear():
    """linear="structured" (default) gives the hidden Linear (7) a group region and leaves the classifier
    (9) and every conv region as the paper's table ("l2") has them."""
    paper = {g["name"]: g["constraint"] for g in _constrain(_bn_net(), None, "group_k_support", linear="l2")[0]}
    structured = {g["name"]: g["constraint"] for g in _constrain(_bn_net(), None, "group_k_support")[0]}
    assert type(structured["7.weight"]) is GroupKSupportBall and type(paper["7.weight"]) is L2Ball
    for n in paper:
        if n != "7.weight":
            assert structured[n].to_spec() == paper[n].to_spec(), n


@pytest.mark.parametrize("kwargs,name", [(dict(radius_rule="ckpt"), "radius_rule"), (dict(linear="group"), "linear"),
                                         (dict(norm_radius="paper"), "norm_radius")])
def test_bad_options_raise_naming_them(kwargs, name):
    with pytest.raises(ValueError, match=name):
        sparsefw.constrain(_bn_net(), "l2", **kwargs)


@pytest.mark.parametrize("name", sorted(ZOO))
def test_auto_rule_takes_init_on_fresh_models_and_checkpoint_on_trained_ones(name):
    """radius_rule="auto" = "init" where every norm γ = 1 and β = 0 (fresh), else "checkpoint"."""
    from sparsefw.radii import moved_norm_parameters
    radii = {}
    for pretrained in (False, True):
        for rule in ("auto", "init", "checkpoint"):
            model, x = build(name, pretrained)
            groups, _ = _constrain(model, x, "k_support", radius_rule=rule)
            radii[pretrained, rule] = [g["constraint"].radius for g in groups]
        assert bool(moved_norm_parameters(model)) is pretrained
    assert radii[False, "auto"] == radii[False, "init"] != radii[False, "checkpoint"]
    assert radii[True, "auto"] == radii[True, "checkpoint"] != radii[True, "init"]


def test_moved_norm_parameters_sees_batchnorm_and_ignores_biases():
    from sparsefw.radii import moved_norm_parameters
    model = _bn_net()   # PyTorch's init: conv and Linear biases nonzero, norms 1 / 0
    assert moved_norm_parameters(model) == []
    with torch.no_grad():
        model[1].bias.add_(0.1)
        model[4].weight[0] = 2.0
    assert moved_norm_parameters(model) == ["1.bias", "4.weight"]
