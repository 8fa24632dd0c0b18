"""recalibrate_batchnorm against statistics computed by hand from the batches."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sparsefw.compress import prune, recalibrate_batchnorm


def _net() -> nn.Sequential:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.BatchNorm2d(3), nn.ReLU(), nn.Dropout(0.5),
                        nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4 * 4 * 4, 3))
    with torch.no_grad():            # stale statistics, as after compression
        for bn in (net[1], net[5]):
            bn.running_mean.fill_(5.0)
            bn.running_var.fill_(0.01)
            bn.weight.uniform_(0.5, 2.0)
            bn.bias.uniform_(-1.0, 1.0)
    return net.eval()


def _stats(h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, unbiased variance, biased variance) per channel of an N×C×H×W batch, by hand."""
    c = h.transpose(0, 1).reshape(h.shape[1], -1).double()
    n = c.shape[1]
    mean = c.sum(1) / n
    sq = ((c - mean[:, None]) ** 2).sum(1)
    return mean, sq / (n - 1), sq / n


def _expected(net: nn.Sequential, batches: list[torch.Tensor]):
    """Cumulative averages of the batch statistics of both BN inputs; BN1 normalises with batch
    statistics (training mode) when producing BN2's input, dropout is off."""
    means1, vars1, means2, vars2 = [], [], [], []
    for x in batches:
        h1 = F.conv2d(x, net[0].weight, net[0].bias, padding=1)
        m1, v1, b1 = _stats(h1)
        z = (h1.double() - m1[None, :, None, None]) / torch.sqrt(b1[None, :, None, None] + net[1].eps)
        z = z * net[1].weight.double()[None, :, None, None] + net[1].bias.double()[None, :, None, None]
        h2 = F.conv2d(z.relu().float(), net[4].weight, net[4].bias)
        m2, v2, _ = _stats(h2)
        means1.append(m1), vars1.append(v1), means2.append(m2), vars2.append(v2)
    avg = lambda xs: torch.stack(xs).mean(0)  # noqa: E731
    return avg(means1), avg(vars1), avg(means2), avg(vars2)


def test_running_statistics_are_the_average_of_the_batch_statistics():
    net = _net()
    batches = [torch.randn(5, 2, 6, 6) * 3 + 1 for _ in range(3)]
    new = recalibrate_batchnorm(net, [(x, torch.zeros(5)) for x in batches])
    m1, v1, m2, v2 = _expected(net, batches)
    torch.testing.assert_close(new[1].running_mean.double(), m1, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(new[1].running_var.double(), v1, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(new[5].running_mean.double(), m2, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(new[5].running_var.double(), v2, rtol=1e-4, atol=1e-4)
    assert not new.training and not any(m.training for m in new.modules())
    assert new[1].momentum == net[1].momentum == 0.1           # momentum restored
    for (name, p), q in zip(net.named_parameters(), new.parameters()):
        assert torch.equal(p, q), name                          # weights untouched


def test_original_model_untouched_and_max_batches_stops_an_endless_stream():
    net = _net()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    batches = [torch.randn(4, 2, 6, 6) for _ in range(2)]

    def endless():
        while True:
            yield from batches

    new = recalibrate_batchnorm(net, endless(), max_batches=2)
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k]), k
    m1, v1, _, _ = _expected(net, batches)
    torch.testing.assert_close(new[1].running_mean.double(), m1, rtol=1e-5, atol=1e-5)
    assert int(new[1].num_batches_tracked) == 2


def test_recalibration_repairs_a_model_whose_statistics_went_stale():
    """Stale statistics wreck the outputs; recalibrated on the very batch, eval mode reproduces
    training-mode BN up to the unbiased/biased variance factor n/(n−1)."""
    net = _net()
    x = torch.randn(64, 2, 6, 6)
    new = recalibrate_batchnorm(net, [x])
    reference = nn.Sequential(*[m for i, m in enumerate(new) if i != 3])   # no dropout
    with torch.no_grad():
        for bn in (reference[1], reference[4]):
            bn.train()
            bn.momentum = 0.0        # batch statistics, running ones left alone
        expected = reference(x)
        for bn in (reference[1], reference[4]):
            bn.eval()
        got = new(x)
        stale = net(x)
    assert (got - expected).abs().max() < 0.05 * expected.abs().max()
    assert (stale - expected).abs().max() > 10 * (got - expected).abs().max()


def test_model_without_batchnorm_comes_back_as_an_equal_copy():
    net = nn.Sequential(nn.Linear(3, 2))
    new = recalibrate_batchnorm(net, [torch.randn(2, 3)])
    assert new is not net and torch.equal(new[0].weight, net[0].weight)


def test_works_on_a_pruned_model():
    net = _net()
    small = prune(net, sparsity=0.5)
    new = recalibrate_batchnorm(small, [torch.randn(8, 2, 6, 6)])
    assert torch.count_nonzero(new[0].weight) == torch.count_nonzero(small[0].weight)
    assert not torch.equal(new[1].running_mean, small[1].running_mean)


@pytest.mark.parametrize("max_batches", [0, -1, 1.5, True])
def test_bad_max_batches(max_batches):
    with pytest.raises(ValueError, match="max_batches"):
        recalibrate_batchnorm(_net(), [torch.randn(2, 2, 6, 6)], max_batches=max_batches)


def test_empty_batches_and_untracked_statistics_are_errors():
    with pytest.raises(ValueError, match="empty"):
        recalibrate_batchnorm(_net(), [])
    net = nn.Sequential(nn.Conv2d(1, 2, 1), nn.BatchNorm2d(2, track_running_stats=False))
    with pytest.raises(ValueError, match="do not track"):
        recalibrate_batchnorm(net, [torch.randn(2, 1, 3, 3)])
    with pytest.raises(ValueError, match="nn.Module"):
        recalibrate_batchnorm("not a model", [torch.randn(2, 1, 3, 3)])
