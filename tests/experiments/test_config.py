"""Config schema: defaults, types, values, overrides, methods — every error names its key."""
import re

import pytest

from sparsefw.experiments.config import (ConfigError, packaged_configs, parse_override, read_config_file,
                                         resolve, to_dict, validate)


def test_empty_config_gives_the_defaults():
    cfg = validate({})
    assert cfg.optimizer.name == "sfw" and cfg.data.name == "mnist5k" and cfg.training.epochs == 5
    assert cfg.sweep.channels == [] and cfg.sweep.filters == [0.1, 0.3, 0.5, 0.7]   # coupled removal is opt-in
    assert cfg.sweep.latency is False
    assert [validate({"sweep": {"latency": v}}).sweep.latency for v in (True, ["channels"])] == [True, ["channels"]]


@pytest.mark.parametrize("raw, key, words", [
    ({"optimizer": {"lr": "abc"}}, "optimizer.lr", "expected a number, got 'abc'"),
    ({"optimizer": {"lrr": 0.1}}, "optimizer.lrr", "unknown key"),
    ({"bogus": 1}, "bogus", "unknown key"),
    ({"training": {"epochs": 2.5}}, "training.epochs", "expected an integer"),
    ({"training": {"epochs": 0}}, "training.epochs", "must be positive"),
    ({"training": {"amp": "yes please"}}, "training.amp", "expected true or false"),
    ({"optimizer": {"momentum": 1.0}}, "optimizer.momentum", "[0, 1)"),
    ({"optimizer": {"mode": "k_supprt"}}, "optimizer.mode", "must be one of"),
    ({"optimizer": {"k": 1.5}}, "optimizer.k", "(0, 1]"),
    ({"optimizer": {"k": True}}, "optimizer.k", "expected a number"),
    ({"optimizer": {"name": "sfw", "weight_decay": 1e-4}}, "optimizer.weight_decay", "no weight decay"),
    ({"optimizer": {"name": "sgd", "penalty": "nuclear"}}, "optimizer.penalty_lambda", "positive"),
    ({"sweep": {"unstructured": [0.5, 1.0]}}, "sweep.unstructured", "(0, 1)"),
    ({"sweep": {"filters": 0.5}}, "sweep.filters", "expected a list of numbers"),
    ({"sweep": {"channels": [0.3, 1.0, 0.0]}}, "sweep.channels", "each in (0, 1), not 1.0, 0.0"),
    ({"sweep": {"channels": [-0.5]}}, "sweep.channels", "not -0.5"),
    ({"sweep": {"channels": ["half"]}}, "sweep.channels[0]", "expected a number"),
    ({"sweep": {"channels": 0.5}}, "sweep.channels", "expected a list of numbers"),
    ({"sweep": {"latency": ["channel"]}}, "sweep.latency", "not 'channel'"),
    ({"sweep": {"latency": "channels"}}, "sweep.latency", "expected true or false or a list of strings"),
    ({"data": {"subset": [100]}}, "data.subset", "pair"),
    ({"schedule": {"warmup_epochs": 5}, "training": {"epochs": 5}}, "schedule.warmup_epochs", "shorter"),
    ({"model": "cnn"}, "model", "expected a mapping"),
    ({"optimizer": {"norm_radius": 0}}, "optimizer.norm_radius", "must be positive"),
    ({"optimizer": {"name": "sgd", "norm_radius": 10}}, "optimizer.norm_radius", "SFW"),
    ({"optimizer": {"mode": "coupled_group_k_support", "coupled_step": 2}}, "optimizer.coupled_step", "(0, 1]"),
    ({"optimizer": {"mode": "coupled_group_k_support", "coupled_step": "fast"}}, "optimizer.coupled_step",
     "'optimizer'"),
    ({"optimizer": {"mode": "coupled_group_k_support", "coupled_width": -1}}, "optimizer.coupled_width",
     "must be positive"),
    ({"optimizer": {"mode": "k_support", "coupled_width": 3}}, "optimizer.coupled_width", "coupled_group_k_support"),
    ({"optimizer": {"name": "sgd", "coupled_step": 0.1}}, "optimizer.coupled_step", "coupled_group_k_support"),
])
def test_bad_values_raise_with_the_key(raw, key, words):
    with pytest.raises(ConfigError) as err:
        validate(raw)
    assert f"'{key}'" in str(err.value) and words in str(err.value)


def test_types_are_normalised():
    cfg = validate({"optimizer": {"lr": 1, "k": 10, "width": "5e-1"}, "training": {"epochs": 3.0}})
    assert cfg.optimizer.lr == 1.0 and isinstance(cfg.optimizer.lr, float)
    assert cfg.optimizer.k == 10 and isinstance(cfg.optimizer.k, int)      # a count stays a count
    assert cfg.optimizer.width == 0.5                                       # YAML 1.1 reads 5e-1 as text
    assert cfg.training.epochs == 3 and isinstance(cfg.training.epochs, int)
    assert validate(to_dict(cfg)) == cfg


def test_norm_radius_reaches_the_regions_of_the_1d_parameters():
    from torch import nn

    from sparsefw.experiments.optimizers import build_optimizer
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4, 2))
    cfg = validate({"optimizer": {"mode": "k_support", "norm_radius": 3}}).optimizer
    optimizer, _, _ = build_optimizer(cfg, model)
    radii = {g["name"]: g["constraint"].radius for g in optimizer.param_groups}
    assert radii["1.weight"] == radii["1.bias"] == radii["3.bias"] == 3.0
    assert radii["0.weight"] != 3.0 and radii["3.weight"] != 3.0


def test_radius_rule_linear_and_direction_reach_constrain():
    """A checkpoint-like model (γ moved, weights ×20): "checkpoint" radii are width · the tensor's gauge;
    "structured" gives the hidden Linear a group region over its output units; the direction is the
    momentum unless "adam" is asked; SGD refuses the three keys."""
    import torch
    from torch import nn

    from sparsefw.constraints import GroupKSupportBall
    from sparsefw.experiments.optimizers import build_optimizer
    model = nn.Sequential(nn.Linear(6, 5), nn.LayerNorm(5), nn.ReLU(), nn.Linear(5, 5), nn.ReLU(), nn.Linear(5, 2))
    with torch.no_grad():
        model[1].weight.mul_(1.5)
        model[3].weight.mul_(20)
    raw = {"optimizer": {"mode": "group_k_support", "radius_rule": "checkpoint", "linear": "structured"}}
    optimizer, _, _ = build_optimizer(validate(raw).optimizer, model)
    groups = {g["name"]: g["constraint"] for g in optimizer.param_groups}
    region = groups["3.weight"]
    assert isinstance(region, GroupKSupportBall)
    assert region.radius == pytest.approx(10 * float(region.norm(model[3].weight.detach())))
    assert all(g["direction"] != "adam" for g in optimizer.param_groups)     # "auto": the momentum here
    raw["optimizer"]["direction"] = "adam"
    optimizer, _, _ = build_optimizer(validate(raw).optimizer, model)
    assert all(g["direction"] == "adam" and g["lr"] == 3e-3 for g in optimizer.param_groups)
    for key, value in (("radius_rule", "auto"), ("linear", "l2"), ("direction", "adam")):
        with pytest.raises(ConfigError, match=f"optimizer.{key}"):
            validate({"optimizer": {"name": "sgd", key: value}})
        with pytest.raises(ConfigError, match=f"optimizer.{key}"):
            validate({"optimizer": {key: "sometimes"}})


@pytest.mark.parametrize("mode", ["k_support", "group_k_support", "spectral_k_support"])
def test_unset_k_width_lr_and_norm_radius_are_the_library_defaults(mode):
    """The config leaves k (null) and the radius rule (null) to `constrain`, and its width and lr
    equal `constrain`'s and `SFW`'s: the regions and step size are exactly the library defaults'."""
    import inspect

    import torch
    from torch import nn

    import sparsefw
    from sparsefw.experiments.optimizers import build_optimizer
    make = lambda: nn.Sequential(nn.Conv2d(1, 10, 3), nn.BatchNorm2d(10), nn.Flatten(), nn.Linear(10 * 4 * 4, 2))  # noqa: E731
    cfg = validate({"optimizer": {"mode": mode}}).optimizer
    assert cfg.k is None and cfg.norm_radius is None
    assert cfg.width == inspect.signature(sparsefw.constrain).parameters["width"].default
    assert cfg.lr == inspect.signature(sparsefw.SFW).parameters["lr"].default
    torch.manual_seed(0)
    optimizer, _, _ = build_optimizer(cfg, make())
    torch.manual_seed(0)
    library = sparsefw.constrain(make(), mode)
    for ours, theirs in zip(optimizer.param_groups, library):
        assert ours["constraint"].to_spec() == theirs["constraint"].to_spec(), ours["name"]


def test_norm_radius_takes_a_rule_name():
    assert validate({"optimizer": {"norm_radius": "init"}}).optimizer.norm_radius == "init"
    assert validate({"optimizer": {"norm_radius": 2}}).optimizer.norm_radius == 2
    with pytest.raises(ConfigError, match="optimizer.norm_radius"):
        validate({"optimizer": {"norm_radius": "paper"}})


def test_overrides_are_yaml_and_apply_to_every_method():
    raw = {"name": "x", "optimizer": {"lr": 0.1},
           "methods": {"a": {"optimizer": {"lr": 0.3}}, "b": {"optimizer": {"name": "sgd"}}}}
    out = resolve(raw, ["optimizer.lr=0.05", "methods.b.training.epochs=7", "sweep.filters=[0.2, 0.4]"])
    assert list(out) == ["a", "b"]
    assert out["a"].optimizer.lr == out["b"].optimizer.lr == 0.05
    assert out["b"].training.epochs == 7 and out["a"].training.epochs == 5
    assert out["a"].sweep.filters == [0.2, 0.4]
    assert list(resolve(raw, methods=["b"])) == ["b"]
    assert parse_override("a.b=") == (["a", "b"], None)


def test_method_errors_name_the_method_and_key():
    raw = {"methods": {"good": {}, "bad": {"optimizer": {"lr": "fast"}}}}
    with pytest.raises(ConfigError, match=r"method 'bad': config key 'optimizer.lr'"):
        resolve(raw)
    with pytest.raises(ConfigError, match="unknown method"):
        resolve(raw, methods=["nope"])
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        resolve({}, ["optimizer.lr"])


def test_missing_file_and_packaged_names(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        read_config_file(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("optimizer: [unclosed")
    with pytest.raises(ConfigError, match="invalid YAML"):
        read_config_file(bad)
    names = packaged_configs()
    assert {"demo", "cifar10_resnet56", "cifar10_vgg16", "cifar100_wrn28_10", "imagenet_resnet50"} <= set(names)
    for name in names:          # every shipped config validates, method by method
        assert resolve(read_config_file(name))


def test_names_and_k_come_from_the_layers_that_own_them():
    """Every mode sparsefw.constrain takes, every rescale SFW takes and every penalty or proximal
    step of optim.baselines is accepted by the config, nothing else; k is judged by assign.check_k."""
    import torch

    from sparsefw.assign import MODES, check_k, constrain
    from sparsefw.experiments.optimizers import build_optimizer
    from sparsefw.optim import PENALTIES, PROX_OPERATORS, SFW
    from sparsefw.optim.functional import RESCALES

    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.Flatten(), torch.nn.Linear(4 * 4 * 4, 3))
    x = torch.randn(1, 1, 6, 6)     # the example input of the coupled mode's channel analysis
    for mode in MODES:
        opt, _, _ = build_optimizer(validate({"optimizer": {"mode": mode, "k": 0.5}}).optimizer, model, x)
        assert isinstance(opt, SFW)
    for rescale in RESCALES:
        assert validate({"optimizer": {"rescale": rescale}}).optimizer.rescale == rescale
    for name in (*PENALTIES, *PROX_OPERATORS):
        cfg = validate({"optimizer": {"name": "sgd", "penalty": name, "penalty_lambda": 1e-3}}).optimizer
        _, penalty, after_step = build_optimizer(cfg, model)
        assert (penalty is not None) == (name in PENALTIES) and (after_step is not None) == (name in PROX_OPERATORS)
    for bad in [("optimizer", "mode", "k_supprt"), ("optimizer", "rescale", "sometimes"),
                ("optimizer", "penalty", "lasso")]:
        with pytest.raises(ConfigError, match="must be one of"):
            validate({"optimizer": {"name": "sgd" if bad[1] == "penalty" else "sfw", bad[1]: bad[2]}})
    for k in (0.0, 1.5, -0.1, 0, -3, 0.5, 1.0, 1, 7):
        try:
            check_k(k)
            library = None
        except ValueError as e:
            library = str(e)
        try:
            validate({"optimizer": {"k": k}})
            config = None
        except ConfigError as e:
            config = str(e)
        assert config == (None if library is None else f"config key 'optimizer.k': {library}")
        if library is not None:
            with pytest.raises(ValueError, match=re.escape(library)):
                constrain(model, "k_support", k=k)


@pytest.mark.parametrize("model, key, words", [
    ({"name": "cnn", "widths": [4, 4, 8]}, "model.widths", "widths must be four positive ints, got widths=[4, 4, 8]"),
    ({"name": "cnn", "widths": [4, 0, 8, 8]}, "model.widths", "four positive ints"),
    ({"name": "cnn", "widths": [4, 4.5, 8, 8]}, "model.widths", "four positive ints"),
    ({"name": "fcn", "widths": [16, 32, 64, 64]}, "model.widths", "widths must be three positive ints"),
    ({"name": "fcn", "widths": 16}, "model.widths", "three positive ints, got widths=16"),
    ({"name": "mlp", "hidden": []}, "model.hidden", "hidden must be one or more positive ints"),
    ({"name": "mlp", "hidden": [300, True]}, "model.hidden", "one or more positive ints"),
    ({"name": "mlp", "widths": [300, 100]}, "model.widths",
     "model 'mlp' takes no option 'widths' (its options: hidden)"),
    ({"name": "cnn", "depth": 3}, "model.depth", "model 'cnn' takes no option 'depth' (its options: widths)"),
    ({"name": "resnet20", "widths": [16, 32, 64]}, "model.widths", "model 'resnet20' takes no option 'widths' "
                                                                  "(its options: none)"),
    ({"name": "resnet21"}, "model.name", "unknown model name='resnet21'"),
])
def test_each_model_judges_its_own_options(model, key, words):
    with pytest.raises(ConfigError) as err:
        validate({"model": model})
    assert str(err.value).startswith(f"config key '{key}': ") and words in str(err.value)


def test_model_options_are_the_models_own_and_null_keeps_the_default():
    """fcn takes three widths and mlp its hidden sizes, beside model.name; null unsets an option (how a
    method drops one of the file it is merged onto); to_dict writes them back where validate reads them."""
    fcn = validate({"model": {"name": "fcn", "widths": [16, 32, 64]}})
    assert fcn.model.name == "fcn" and fcn.model.options == {"widths": [16, 32, 64]}
    assert to_dict(fcn)["model"] == {"name": "fcn", "widths": [16, 32, 64]} and validate(to_dict(fcn)) == fcn
    assert validate({"model": {"name": "mlp", "hidden": [20]}}).model.options == {"hidden": [20]}
    assert validate({"model": {"name": "mlp", "widths": None}}).model.options == {}
    raw = {"model": {"name": "cnn", "widths": [4, 4, 8, 8]}, "methods": {"cnn": {}, "fcn": {"model": {"name": "fcn",
           "widths": None}}}}
    out = resolve(raw, ["methods.cnn.model.widths=[2, 2, 4, 4]"])
    assert out["cnn"].model.options == {"widths": [2, 2, 4, 4]}
    assert out["fcn"].model == validate({"model": {"name": "fcn"}}).model


def test_fcn_with_three_widths_trains_through_train(tmp_path):
    """One step of m2nist through `train`; the trained (and reloaded) net has the configured widths."""
    import torch

    from sparsefw.experiments.sweep import load_trained
    from sparsefw.experiments.train import train
    cfg = validate({"data": {"name": "m2nist", "subset": [8, 8], "batch_size": 8, "eval_batch_size": 8},
                    "model": {"name": "fcn", "widths": [3, 5, 7]},
                    "training": {"epochs": 1, "device": "cpu", "progress": False}})
    history = train(cfg, tmp_path / "run")
    assert len(history) == 1 and history[0]["train_loss"] > 0
    model, saved, _, _ = load_trained(tmp_path / "run")
    assert saved.model.options == {"widths": [3, 5, 7]}
    assert [m.out_channels for m in model.modules() if isinstance(m, torch.nn.Conv2d)] == [3, 5, 7, 7, 5, 3, 11]


@pytest.mark.parametrize("key, values", [
    ("norm_radius", [0, -2.5, "paper", "init", "width", 3]),
    ("coupled_step", [0, 1.5, "fast", "optimizer", 0.5]),
    ("momentum", [1.0, -0.1, 0.0, 0.9]),
])
def test_norm_radius_coupled_step_and_momentum_are_judged_by_their_layers(key, values):
    """The config's error is the message of the layer that owns the value (assign for the regions, SFW
    for momentum), with the key in front; what the library accepts, the config accepts."""
    import torch

    from sparsefw.assign import constrain
    from sparsefw.optim import SFW

    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.Flatten(), torch.nn.Linear(4 * 4 * 4, 3))
    mode = "coupled_group_k_support" if key == "coupled_step" else "k_support"
    x = torch.randn(1, 1, 6, 6)     # the example input of the coupled mode's channel analysis
    library_call = {"norm_radius": lambda v: constrain(model, mode, norm_radius=v),
                    "coupled_step": lambda v: constrain(model, mode, coupled_step=v, example_inputs=x),
                    "momentum": lambda v: SFW(model.parameters(), momentum=v)}[key]
    verdicts = []
    for value in values:
        try:
            library_call(value)
            library = None
        except ValueError as e:
            library = str(e)
        try:
            assert getattr(validate({"optimizer": {"mode": mode, key: value}}).optimizer, key) == value
            config = None
        except ConfigError as e:
            config = str(e)
        assert config == (None if library is None else f"config key 'optimizer.{key}': {library}"), value
        verdicts.append(library)
    assert None in verdicts and any(verdicts)       # both accepted and refused values were tried
