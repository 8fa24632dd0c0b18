"""remove_filters against the independent truth: the ln_structured-masked model."""
import copy
import json

import pytest
import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

from nets import CifarResNet, ConcatNet, DataDependent, DepthwiseNet, PlainCNN, randomize
from sparsefw.compress import count_parameters, rebuild, remove_filters
from sparsefw.compress._modules import BorderCorrection

AMOUNTS = (0.1, 0.3, 0.5, 0.7)
NETS = {  # name: (constructor, two input sizes; PlainCNN's Linear fixes its size)
    "plain": (lambda: PlainCNN(spatial=8), [(8, 8), (8, 8)]),
    "resnet": (lambda: CifarResNet(blocks=1), [(32, 32), (20, 24)]),
    "depthwise": (DepthwiseNet, [(16, 16), (10, 12)]),
    "concat": (ConcatNet, [(16, 16), (11, 13)]),
}


def masked_copy(model, amount, n=1):
    masked = copy.deepcopy(model)
    for module in masked.modules():
        if isinstance(module, nn.Conv2d):
            torch_prune.ln_structured(module, "weight", amount, n=n, dim=0)
    return masked


@pytest.fixture(scope="module", params=sorted(NETS))
def net(request):
    make, sizes = NETS[request.param]
    torch.manual_seed(0)
    return randomize(make()), sizes


@pytest.mark.parametrize("amount", AMOUNTS)
def test_matches_masked_model_at_two_sizes(net, amount):
    model, sizes = net
    before = copy.deepcopy(model.state_dict())
    gen = torch.Generator().manual_seed(1)
    example = torch.randn(2, 3, *sizes[0], generator=gen, dtype=torch.float64)
    compressed = remove_filters(model, amount, example)
    reference = masked_copy(model, amount)
    for size in sizes:
        x = torch.randn(2, 3, *size, generator=gen, dtype=torch.float64)
        with torch.no_grad():
            torch.testing.assert_close(compressed(x), reference(x), rtol=1e-10, atol=1e-10)
    # physically smaller: every conv lost filters (a grouped conv keeps its groups equal in
    # size, so it may keep masked filters with zero weights), fewer parameters
    for name, conv in model.named_modules():
        if isinstance(conv, nn.Conv2d) and round(amount * conv.out_channels) > 0:
            smaller = compressed.get_submodule(name).out_channels < conv.out_channels
            assert smaller or conv.out_channels > conv.groups > 1, name
    assert count_parameters(compressed) < count_parameters(model)
    # the input model is untouched
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_constants_matter_and_border_correction_is_needed():
    """Without the folded constants (or without the border term) the result would be wrong."""
    model = randomize(CifarResNet(blocks=1))
    x = torch.randn(2, 3, 20, 24, dtype=torch.float64)
    compressed = remove_filters(model, 0.5, x)
    borders = [m for m in compressed.modules() if isinstance(m, BorderCorrection)]
    assert borders
    reference = masked_copy(model, 0.5)(x)
    for border in borders:  # drop the border term and keep only its interior value in no bias
        border.kernel.zero_()
    assert (compressed(x) - reference).abs().max() > 1e-3


def test_l2_criterion_and_kept_filters_are_those_of_ln_structured():
    model = randomize(DepthwiseNet())
    x = torch.randn(1, 3, 16, 16, dtype=torch.float64)
    compressed, recipe = remove_filters(model, 0.4, x, criterion="l2", return_recipe=True)
    reference = masked_copy(model, 0.4, n=2)
    for name, kept in recipe["filters"].items():
        mask = reference.get_submodule(name).weight_mask.flatten(1).amax(1)
        assert kept == torch.nonzero(mask).flatten().tolist(), name
    torch.testing.assert_close(compressed(x), reference(x), rtol=1e-10, atol=1e-10)


def test_recipe_rebuild_loads_checkpoint_with_weights_only(tmp_path):
    model = randomize(CifarResNet(blocks=1))
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    compressed, recipe = remove_filters(model, 0.5, x, return_recipe=True)
    torch.save(compressed.state_dict(), tmp_path / "c.pt")
    (tmp_path / "r.json").write_text(json.dumps(recipe))
    fresh = CifarResNet(blocks=1).double().eval()  # other weights, same architecture
    rebuilt = rebuild(fresh, json.loads((tmp_path / "r.json").read_text()))
    rebuilt.load_state_dict(torch.load(tmp_path / "c.pt", weights_only=True))
    y = torch.randn(2, 3, 24, 24, dtype=torch.float64)
    torch.testing.assert_close(rebuilt(y), compressed(y), rtol=0, atol=0)


def test_amount_zero_is_identity_and_float32_works():
    model = CifarResNet(blocks=1).eval()
    x = torch.randn(2, 3, 16, 16)
    torch.testing.assert_close(remove_filters(model, 0.0, x)(x), model(x))
    compressed = remove_filters(randomize(CifarResNet(blocks=1)).float(), 0.3, x)
    torch.testing.assert_close(compressed(x),
                               masked_copy(randomize(CifarResNet(blocks=1)).float(), 0.3)(x),
                               rtol=1e-4, atol=1e-4)


class _Shared(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, x):
        return self.conv(self.conv(x))


def test_clear_errors():
    x = torch.randn(1, 3, 8, 8)
    with pytest.raises(ValueError, match="amount"):
        remove_filters(PlainCNN(), 1.0, x)
    with pytest.raises(ValueError, match="criterion"):
        remove_filters(PlainCNN(), 0.5, x, criterion="l3")
    with pytest.raises(ValueError, match="example_inputs"):
        remove_filters(PlainCNN(), 0.5, [1, 2])
    with pytest.raises(ValueError, match="called 2 times"):
        remove_filters(_Shared(), 0.5, torch.randn(1, 4, 8, 8))
    with pytest.raises(ValueError, match="torch.fx"):
        remove_filters(DataDependent(), 0.5, x)
    one_filter = nn.Sequential(nn.Conv2d(3, 1, 3), nn.ReLU())
    with pytest.raises(ValueError, match="empties conv '0'"):
        remove_filters(one_filter, 0.7, x)


def test_unknown_ops_see_the_full_tensor():
    """An op the pass does not know (softmax over channels) gets the channels put back."""
    model = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.Softmax(dim=1),
                          nn.Conv2d(6, 5, 3, padding=1))
    model = randomize(model)
    x = torch.randn(2, 3, 9, 7, dtype=torch.float64)
    compressed = remove_filters(model, 0.5, x)
    torch.testing.assert_close(compressed(x), masked_copy(model, 0.5)(x), rtol=1e-10, atol=1e-10)
