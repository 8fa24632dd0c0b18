"""`factorize` on the test zoo: the factorized model computes exactly what the original computes
with each chosen layer's weight replaced by its best rank-r approximation (Eckart–Young, from
numpy's SVD of every group's c_out/g × (c_in/g·kh·kw) matrix, computed here independently)."""
import copy

import numpy as np
import pytest
import torch
from torch import nn

from nets import randomize
from sparsefw.compress import factorize
from zoo import ZOO, first_tensor


def low_rank_copy(model: nn.Module, ranks: dict[str, int]) -> nn.Module:
    """`model` with every layer named in `ranks` given its truncated-SVD weight (same shapes)."""
    reference = copy.deepcopy(model)
    with torch.no_grad():
        for name, r in ranks.items():
            layer = reference.get_submodule(name)
            weight = layer.weight.detach().numpy()
            g = getattr(layer, "groups", 1)
            rows = weight.reshape(g, weight.shape[0] // g, -1)
            approx = []
            for matrix in rows:
                u, s, vh = np.linalg.svd(matrix, full_matrices=False)
                approx.append((u[:, :r] * s[:r]) @ vh[:r])
            layer.weight.copy_(torch.from_numpy(np.stack(approx).reshape(weight.shape)))
    return reference


@pytest.mark.parametrize("layers", ["conv", "all"])
@pytest.mark.parametrize("name", sorted(ZOO))
def test_factorized_zoo_model_equals_its_low_rank_weights(name, layers):
    make, sizes = ZOO[name]
    torch.manual_seed(0)
    model = randomize(make())
    small, recipe = factorize(model, rank=0.5, layers=layers, cost="params", return_recipe=True)
    assert recipe["ranks"], f"{name}: no layer was factorized"
    assert type(small) is type(model)
    reference = low_rank_copy(model, recipe["ranks"])
    for seed, size in enumerate(sizes):
        x = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        with torch.no_grad():
            got, want = first_tensor(small(x)), first_tensor(reference(x))
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)
