"""Truncated-SVD factorization: exact at full rank, rank rules, break-even, hand-counted cost, and
the per-layer speed decision and budgets under a deterministic cost model (no timed assertions)."""
import copy

import pytest
import torch
from torch import nn

from nets import CifarResNet, DepthwiseNet, randomize
from sparsefw.compress import FactorizedConv2d, FactorizedLinear, count_flops, count_parameters, factorize, rebuild
from sparsefw.compress._util import set_submodule
from sparsefw.compress.factorize import LATENCY_MARGIN


class Small(nn.Module):
    """conv 3→8 3×3 pad 1 (m=8, n=27), conv 8→16 3×3 stride 2 (m=16, n=72), Linear 16·4·4 → 10."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 3, padding=1)
        self.c2 = nn.Conv2d(8, 16, 3, stride=2, padding=1, bias=False)
        self.fc = nn.Linear(256, 10)

    def forward(self, x):
        return self.fc(torch.relu(self.c2(torch.relu(self.c1(x)))).flatten(1))


@pytest.mark.parametrize("make", [CifarResNet, DepthwiseNet, Small])
def test_full_rank_equals_original(make):
    model = randomize(make())
    model.get_submodule(next(n for n, m in model.named_modules()
                             if isinstance(m, nn.Conv2d))).padding_mode = "reflect"
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    full = factorize(model, rank=1.0, skip_no_saving=False)
    assert any(isinstance(m, FactorizedConv2d) for m in full.modules())
    torch.testing.assert_close(full(x), model(x), rtol=1e-10, atol=1e-10)


def test_params_and_flops_match_hand_computation():
    model = Small().eval()
    x = torch.randn(1, 3, 8, 8)
    compressed, recipe = factorize(model, rank=0.25, layers="all", return_recipe=True)
    # rank_max: c1 min(8,27)=8 → r=2; c2 min(16,72)=16 → r=4; fc min(10,256)=10 → r=2
    assert recipe["ranks"] == {"c1": 2, "c2": 4, "fc": 2}
    params = (2 * 27 + 8 * 2 + 8) + (4 * 72 + 16 * 4) + (2 * 256 + 10 * 2 + 10)
    assert count_parameters(compressed) == params
    # FLOPs: 2 per multiply-add; c1 at 8×8 outputs, c2 at 4×4, fc once
    flops = 2 * (64 * (2 * 27 + 8 * 2) + 16 * (4 * 72 + 16 * 4) + (2 * 256 + 10 * 2))
    assert count_flops(compressed, x) == flops
    assert count_flops(model, x) == 2 * (64 * 8 * 27 + 16 * 16 * 72 + 10 * 256)


@pytest.mark.parametrize("layers, factorized", [("conv", {"c1", "c2"}), ("linear", {"fc"})])
def test_layer_selection_leaves_the_other_layers_untouched(layers, factorized):
    model = randomize(Small())
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    out, recipe = factorize(model, rank=0.25, layers=layers, return_recipe=True)
    assert set(recipe["ranks"]) == factorized
    for name, module in model.named_children():
        new = out.get_submodule(name)
        if name in factorized:
            assert isinstance(new, (FactorizedConv2d, FactorizedLinear)) and isinstance(new, type(module))
        else:    # same type, bitwise the same weights
            assert type(new) is type(module) and all(torch.equal(a, b) for a, b in
                                                       zip(new.parameters(), module.parameters()))
    # the same as factorizing everything, then putting the untouched layers back
    both = factorize(model, rank=0.25, layers="all")
    for name in {"c1", "c2", "fc"} - factorized:
        setattr(both, name, getattr(model, name))
    torch.testing.assert_close(out(x), both(x), rtol=0, atol=0)
    assert rebuild(model, recipe).c1.__class__ is out.c1.__class__


def test_break_even_skips_and_reports():
    model = Small()
    _, recipe = factorize(model, rank=0.9, layers="all", return_recipe=True)
    # c1: r=7, 7·35=245 ≥ 216 → skipped; c2: r=14, 14·88=1232 ≥ 1152 → skipped; fc r=9 saves
    assert set(recipe["skipped"]) == {"c1", "c2"} and recipe["ranks"] == {"fc": 9}
    _, recipe = factorize(DepthwiseNet(), rank=1.0, return_recipe=True)
    assert {"dw1.0", "dw2.0"} <= set(recipe["skipped"])  # depthwise: m = 1 never saves


def test_energy_rule_against_brute_force():
    model = randomize(Small())
    _, recipe = factorize(model, energy=0.8, skip_no_saving=False, layers="all", return_recipe=True)
    for name, r in recipe["ranks"].items():
        w = model.get_submodule(name).weight.detach()
        s2 = torch.linalg.svdvals(w.reshape(w.shape[0], -1)) ** 2
        kept = [int(s2[:k].sum() >= 0.8 * s2.sum()) for k in range(1, len(s2) + 1)]
        assert r == kept.index(1) + 1, name


@pytest.mark.parametrize("kind", ["params", "flops"])
def test_budget_is_respected_and_spent(kind):
    model = randomize(CifarResNet(blocks=1))
    x = torch.randn(1, 3, 16, 16, dtype=torch.float64)
    measure = count_parameters if kind == "params" else (lambda m: count_flops(m, x))
    for budget in (0.35, 0.6):
        compressed = factorize(model, budget=budget, budget_kind=kind, example_inputs=x,
                               layers="all", cost="params")
        ratio = measure(compressed) / measure(model)
        assert budget - 0.1 < ratio <= budget
    with pytest.raises(ValueError, match="below the smallest"):
        factorize(model, budget=0.01)


def test_recipe_rebuild_and_weights_only_load(tmp_path):
    model = randomize(CifarResNet(blocks=1))
    compressed, recipe = factorize(model, rank=0.5, return_recipe=True)
    torch.save(compressed.state_dict(), tmp_path / "f.pt")
    rebuilt = rebuild(CifarResNet(blocks=1).double().eval(), recipe)
    rebuilt.load_state_dict(torch.load(tmp_path / "f.pt", weights_only=True))
    x = torch.randn(2, 3, 16, 16, dtype=torch.float64)
    torch.testing.assert_close(rebuilt(x), compressed(x), rtol=0, atol=0)


OVERHEAD = 5000.0


def flops_plus_overhead(modules, inputs):
    """A deterministic cost model: FLOPs plus a fixed price per Conv2d/Linear call, the per-op
    overhead that makes a thin factor pair slower than the one layer it replaces (a factorized
    layer is an nn.Conv2d/nn.Linear itself but calls its two stages: only leaf layers count)."""
    return [count_flops(m, inputs) + OVERHEAD * sum(isinstance(x, (nn.Conv2d, nn.Linear))
                                                    and next(x.children(), None) is None
                                                    for x in m.modules()) for m in modules]


def test_default_factorizes_conv_layers_only():
    """The low-rank training mode constrains conv weights only, so Linear layers stay dense
    unless asked for (layers="all")."""
    model = randomize(Small())
    out, recipe = factorize(model, rank=0.25, return_recipe=True)
    assert set(recipe["ranks"]) == {"c1", "c2"} and type(out.fc) is nn.Linear
    assert torch.equal(out.fc.weight, model.fc.weight)


@pytest.mark.parametrize("batch", [1, 2])
def test_cost_model_decides_per_layer_on_the_layers_own_input(batch):
    """A pair replaces a layer iff it costs less there: FLOPs saved 2·positions·(m·n − r·(m + n))
    beat one more call's overhead. positions: c1 8·8, c2 4·4 (stride 2), fc 1, times the batch;
    so fc (m=10, n=256, r=2 saves 2·(2560 − 532) = 4056 FLOPs per sample < 5000) pays only from
    batch 2 on."""
    model = randomize(Small())
    x = torch.randn(batch, 3, 8, 8, dtype=torch.float64)
    out, recipe = factorize(model, rank=0.25, layers="all", example_inputs=x,
                            cost=flops_plus_overhead, return_recipe=True)
    shapes = {"c1": (64, 8, 27, 2), "c2": (16, 16, 72, 4), "fc": (1, 10, 256, 2)}
    for name, (positions, m, n, r) in shapes.items():
        dense = 2 * batch * positions * m * n + OVERHEAD
        pair = 2 * batch * positions * r * (m + n) + 2 * OVERHEAD
        assert recipe["costs"][name] == {"dense": dense, "factorized": pair}
        assert (name in recipe["ranks"]) == (pair < dense), name
    assert ("fc" in recipe["ranks"]) == (batch == 2)
    if batch == 1:
        assert recipe["skipped"]["fc"].startswith("rank 2 is not faster")
    torch.testing.assert_close(out.c2(torch.ones(1, 8, 4, 4, dtype=torch.float64)),
                               factorize(model, rank=0.25).c2(torch.ones(1, 8, 4, 4, dtype=torch.float64)))


@pytest.mark.parametrize("kind", ["params", "flops", "latency"])
def test_budget_under_a_cost_model_is_respected_and_every_pair_pays(kind):
    """Measured on the whole compressed model by the budget's own measure: at most the budget, and
    putting any one factorized layer back to dense would not make the model cheaper under the
    cost model (the pairs that would are left dense, or held at a rank where they still pay)."""
    model = randomize(CifarResNet(blocks=1))
    x = torch.randn(1, 3, 16, 16, dtype=torch.float64)
    cost = lambda m: flops_plus_overhead([m], x)[0]  # noqa: E731
    measure = {"params": count_parameters, "flops": lambda m: count_flops(m, x), "latency": cost}[kind]
    for budget in (0.45, 0.7):
        compressed, recipe = factorize(model, budget=budget, budget_kind=kind, example_inputs=x,
                                       layers="all", cost=flops_plus_overhead, return_recipe=True)
        ratio = measure(compressed) / measure(model)
        assert budget - 0.1 < ratio <= budget + 1e-12
        assert "fc" in recipe["skipped"]          # 2·(320 − 42) FLOPs saved at most < OVERHEAD
        for name in recipe["ranks"]:
            restored = copy.deepcopy(compressed)
            set_submodule(restored, name, model.get_submodule(name))
            assert cost(restored) > cost(compressed), name
    with pytest.raises(ValueError, match="below the smallest reachable latency"):
        factorize(model, budget=0.05, budget_kind="latency", example_inputs=x, cost=flops_plus_overhead)


def test_measured_latency_decisions_follow_the_recorded_costs():
    """cost="latency" (the default with example_inputs) times every layer that can save; a layer is
    factorized exactly where its pair's median was lower by the margin. Times are not asserted."""
    model = CifarResNet(blocks=1).eval()
    x = torch.randn(2, 3, 16, 16)
    out, recipe = factorize(model, rank=0.5, example_inputs=x, return_recipe=True)
    saving = {name for name in recipe["ranks"]} | {n for n, why in recipe["skipped"].items()
                                                   if "not faster" in why}
    assert set(recipe["costs"]) == saving and "fc" not in saving
    for name, c in recipe["costs"].items():
        faster = c["factorized"] < (1 - LATENCY_MARGIN) * c["dense"]
        assert (name in recipe["ranks"]) == faster and c["dense"] > 0
    assert all(not m._forward_pre_hooks for m in model.modules()) and not model.training
    assert "costs" not in factorize(model, rank=0.5, return_recipe=True)[1]   # no inputs: params


def test_validation():
    with pytest.raises(ValueError, match="exactly one"):
        factorize(Small(), rank=0.5, energy=0.9)
    with pytest.raises(ValueError, match="rank"):
        factorize(Small(), rank=1.5)
    with pytest.raises(ValueError, match="energy"):
        factorize(Small(), energy=0.0)
    with pytest.raises(ValueError, match="layers"):
        factorize(Small(), rank=0.5, layers="bn")
    with pytest.raises(ValueError, match="budget_kind"):
        factorize(Small(), budget=0.5, budget_kind="bytes")
    with pytest.raises(ValueError, match="cost must be one of"):
        factorize(Small(), rank=0.5, cost="time")
    with pytest.raises(ValueError, match="example_inputs"):
        factorize(Small(), rank=0.5, cost="latency")
    with pytest.raises(ValueError, match="example_inputs is required for budget_kind='latency'"):
        factorize(Small(), budget=0.5, budget_kind="latency")
    with pytest.raises(ValueError, match="cost='params'"):
        factorize(Small(), budget=0.5, budget_kind="latency", example_inputs=torch.randn(1, 3, 8, 8),
                  cost="params")
