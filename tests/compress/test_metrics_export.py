"""summarize, and compressed models as plain, exportable modules."""
import io

import pytest
import torch
from torch import nn

from nets import CifarResNet, randomize
from sparsefw.compress import factorize, prune, remove_filters, summarize


def test_summarize_counts_and_ratios():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 36, 4))
    x = torch.randn(1, 3, 8, 8)
    smaller = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 36, 4))
    s = summarize(model, smaller, x, warmup=1, repeats=3)
    assert (s.params, s.params_compressed) == (8 * 27 + 8 + 8 * 36 * 4 + 4, 4 * 27 + 4 + 4 * 36 * 4 + 4)
    assert s.flops == 2 * (36 * 8 * 27 + 8 * 36 * 4)
    assert s.flops_ratio == pytest.approx(0.5) and s.params_ratio == s.params_compressed / s.params
    assert s.latency_ms > 0 and s.latency_ms_compressed > 0
    assert set(s.as_dict()) >= {"params_ratio", "flops_ratio", "latency_ratio", "nonzero_ratio", "sparse_flops_ratio"}
    assert (s.nonzero_params, s.sparse_flops) == (s.params, s.flops)          # random weights: no zeros


class _TwiceLinear(nn.Module):
    """A conv stack whose Linear is called twice (shared weights count once, FLOPs per call)."""

    def __init__(self):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 6, 3, stride=2)
        self.fc = nn.Linear(6 * 3 * 3, 6 * 3 * 3)

    def forward(self, x):
        h = self.conv2(torch.relu(self.conv1(x))).flatten(1)
        return self.fc(torch.relu(self.fc(h)))


def test_summarize_after_prune_counts_nonzero_parameters_and_sparse_kernel_flops():
    torch.manual_seed(0)
    model, x = _TwiceLinear(), torch.randn(2, 3, 8, 8)
    pruned = prune(model, sparsity=0.7)
    s = summarize(model, pruned, x, warmup=0, repeats=1)
    assert (s.params_compressed, s.flops_compressed) == (s.params, s.flops)   # pruning keeps the tensors
    nonzero = {name: int(torch.count_nonzero(p)) for name, p in pruned.named_parameters()}
    assert s.nonzero_params_compressed == sum(nonzero.values()) < 0.4 * s.params
    assert s.nonzero_ratio == s.nonzero_params_compressed / s.params
    # brute force: 2 FLOPs per non-zero weight per output position (conv) or row (Linear), per call
    n = x.shape[0]
    expected = 2 * n * (nonzero["conv1.weight"] * 8 * 8 + nonzero["conv2.weight"] * 3 * 3 + 2 * nonzero["fc.weight"])
    assert s.sparse_flops_compressed == expected
    assert s.sparse_flops == s.flops == 2 * n * (8 * 27 * 64 + 6 * 72 * 9 + 2 * 54 * 54)
    assert s.sparse_flops_ratio == pytest.approx(expected / s.flops)


@pytest.mark.parametrize("how", ["prune", "filters", "factorize"])
def test_plain_module_state_dict_round_trip(how):
    model = randomize(CifarResNet(blocks=1)).float()
    x = torch.randn(2, 3, 16, 16)
    compressed = {"prune": lambda: prune(model, 0.8),
                  "filters": lambda: remove_filters(model, 0.5, x),
                  "factorize": lambda: factorize(model, rank=0.5)}[how]()
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in compressed.modules())
    expected = compressed(x)
    buffer = io.BytesIO()
    torch.save(compressed.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    for value in compressed.parameters():
        value.data.zero_()
    assert not torch.allclose(compressed(x), expected)
    compressed.load_state_dict(state)
    torch.testing.assert_close(compressed(x), expected, rtol=0, atol=0)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize("how", ["filters", "factorize"])
def test_onnx_export_matches_pytorch(how, tmp_path):
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    model = randomize(CifarResNet(blocks=1)).float()
    x = torch.randn(2, 3, 16, 16)
    compressed = remove_filters(model, 0.5, x) if how == "filters" else factorize(model, rank=0.5)
    path = tmp_path / "m.onnx"
    # output_names given: the legacy exporter mistakes a GraphModule's fx graph for its own
    torch.onnx.export(compressed, (x,), str(path), dynamo=False, input_names=["x"],
                      output_names=["y"], dynamic_axes={"x": {0: "n", 2: "h", 3: "w"}})
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    y = torch.randn(3, 3, 12, 20)  # another batch and size than the export
    got = session.run(None, {"x": y.numpy()})[0]
    torch.testing.assert_close(torch.from_numpy(got), compressed(y).detach(), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("fastpath", [True, False])
def test_transformer_encoder_flops_include_the_fused_fast_path_work(fastpath):
    """In eval mode nn.TransformerEncoder runs the fused torch._transformer_encoder_layer_fwd,
    which FlopCounterMode does not see. Closed form per layer, T = batch·seq tokens, d model width,
    f feed-forward width: 2·T·(3d² + d² + 2·d·f) for the four projections plus 2·2·batch·seq²·d for
    Q·Kᵀ and softmax·V (summed over heads). The fast-path flag is restored afterwards."""
    batch, seq, d, f, layers = 3, 5, 16, 24, 2
    torch.manual_seed(0)
    encoder = nn.TransformerEncoder(nn.TransformerEncoderLayer(d, 2, f, dropout=0.0, batch_first=True), layers)
    x = torch.randn(batch, seq, d)
    tokens = batch * seq
    expected = layers * (2 * tokens * (3 * d * d + d * d + 2 * d * f) + 2 * 2 * batch * seq * seq * d)
    previous = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(fastpath)
    try:
        s = summarize(encoder, encoder, x, warmup=0, repeats=1)
        assert torch.backends.mha.get_fastpath_enabled() is fastpath
    finally:
        torch.backends.mha.set_fastpath_enabled(previous)
    assert s.flops == s.flops_compressed == s.sparse_flops == expected
    assert encoder.training                      # counted in eval mode, training flag restored
