"""Size, FLOPs and latency of a model, and their ratios between an original and a compressed one.

Two counts each for size and arithmetic: stored parameters and dense FLOPs (what a physically
smaller model saves: filter removal, low rank), and non-zero parameters and the FLOPs a sparse
kernel would do, skipping every multiply-add with a zero weight (what unstructured pruning saves).
"""
from __future__ import annotations

import contextlib
import statistics
import time
from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.utils import flop_counter
from torch.utils.flop_counter import FlopCounterMode

from ..graph.arguments import as_input_tuple


def count_parameters(model: nn.Module) -> int:
    """Number of parameter entries (each shared tensor once)."""
    return sum(p.numel() for p in model.parameters())


def count_nonzero_parameters(model: nn.Module) -> int:
    """Number of non-zero parameter entries (each shared tensor once)."""
    return sum(int(torch.count_nonzero(p)) for p in model.parameters())


def count_flops(model: nn.Module, example_inputs) -> int:
    """FLOPs of one eval-mode forward pass on `example_inputs`, counted by
    `torch.utils.flop_counter.FlopCounterMode` (conv/matmul/attention ops; a multiply-add is 2
    FLOPs), with fused fast paths off (`_counting`)."""
    inputs = as_input_tuple(example_inputs, "example_inputs")
    with _counting(model) as counter:
        model(*inputs)
    return int(counter.get_total_flops())


def _cpu_attention_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    """Q·Kᵀ and softmax·V: 2·b·h·s_q·s_k·(d_q + d_v), as torch counts its other attention kernels."""
    return flop_counter.sdpa_flop_count(query_shape, key_shape, value_shape)


# Ops FlopCounterMode has no formula for (torch 2.13): the CPU kernel of scaled_dot_product_attention
_EXTRA_FORMULAS = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_attention_flops}


@contextlib.contextmanager
def unfused():
    """The fused fast paths of nn.MultiheadAttention / nn.TransformerEncoder(Layer) off
    (torch.backends.mha; restored after): their fused kernels (torch._transformer_encoder_layer_fwd,
    torch._native_multi_head_attention) are invisible to FlopCounterMode and skip the Linear
    modules' forwards; the unfused ops do the same arithmetic, each Linear through its module."""
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)


@contextlib.contextmanager
def _counting(model: nn.Module):
    """FlopCounterMode over an eval, no-grad, `unfused` forward."""
    with unfused(), _eval(model), torch.no_grad(), FlopCounterMode(
            display=False, custom_mapping=_EXTRA_FORMULAS) as counter:
        yield counter


def count_sparse_flops(model: nn.Module, example_inputs) -> int:
    """FLOPs of one eval forward pass if multiply-adds with a zero weight were skipped: each leaf
    module's FLOPs (FlopCounterMode, counted during its forward) times the density
    nnz(weight)/numel(weight) of its `weight`. Each weight entry of a Conv or Linear layer takes
    part in equally many multiply-adds (one per output position), so this is exact for them; FLOPs
    outside weighted leaf modules (functional matmuls) count in full."""
    inputs = as_input_tuple(example_inputs, "example_inputs")
    weighted = [m for m in model.modules() if next(m.children(), None) is None
                and isinstance(getattr(m, "weight", None), torch.Tensor) and m.weight.numel()]
    starts, skipped = [], 0.0

    def before(module, args):
        starts.append(counter.get_total_flops())

    def after(module, args, output):
        nonlocal skipped
        density = int(torch.count_nonzero(module.weight)) / module.weight.numel()
        skipped += (counter.get_total_flops() - starts.pop()) * (1 - density)

    handles = [h for m in weighted for h in (m.register_forward_pre_hook(before), m.register_forward_hook(after))]
    try:
        with _counting(model) as counter:
            model(*inputs)
    finally:
        for h in handles:
            h.remove()
    return round(counter.get_total_flops() - skipped)


def measure_latency(models: list[nn.Module], example_inputs, warmup: int = 3,
                    repeats: int = 20) -> list[float]:
    """Median wall-clock milliseconds of one eval forward pass per model; the models run
    interleaved (one call each per round) so drifting machine load hits them alike."""
    if not isinstance(warmup, int) or warmup < 0:
        raise ValueError(f"warmup must be an int >= 0, got {warmup!r}")
    if not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"repeats must be an int >= 1, got {repeats!r}")
    inputs = as_input_tuple(example_inputs, "example_inputs")
    cuda = inputs[0].is_cuda
    times = [[] for _ in models]
    with contextlib.ExitStack() as stack, torch.no_grad():
        for model in models:
            stack.enter_context(_eval(model))
        for round_ in range(warmup + repeats):
            for model, record in zip(models, times):
                if cuda:
                    torch.cuda.synchronize()
                start = time.perf_counter()
                model(*inputs)
                if cuda:
                    torch.cuda.synchronize()
                if round_ >= warmup:
                    record.append((time.perf_counter() - start) * 1e3)
    return [statistics.median(t) for t in times]


@dataclass
class CompressionSummary:
    """Parameters (stored and non-zero), FLOPs (dense and with a sparse kernel) and median latency
    of both models; ratios are compressed / original."""

    params: int
    params_compressed: int
    flops: int
    flops_compressed: int
    latency_ms: float
    latency_ms_compressed: float
    nonzero_params: int
    nonzero_params_compressed: int
    sparse_flops: int
    sparse_flops_compressed: int

    @property
    def params_ratio(self) -> float:
        return self.params_compressed / self.params

    @property
    def flops_ratio(self) -> float:
        return self.flops_compressed / self.flops if self.flops else float("nan")

    @property
    def latency_ratio(self) -> float:
        return self.latency_ms_compressed / self.latency_ms

    @property
    def nonzero_ratio(self) -> float:
        return self.nonzero_params_compressed / self.nonzero_params if self.nonzero_params else float("nan")

    @property
    def sparse_flops_ratio(self) -> float:
        return self.sparse_flops_compressed / self.sparse_flops if self.sparse_flops else float("nan")

    def as_dict(self) -> dict:
        return {**asdict(self), "params_ratio": self.params_ratio, "flops_ratio": self.flops_ratio,
                "latency_ratio": self.latency_ratio, "nonzero_ratio": self.nonzero_ratio,
                "sparse_flops_ratio": self.sparse_flops_ratio}


def summarize(original: nn.Module, compressed: nn.Module, example_inputs, warmup: int = 3,
              repeats: int = 20) -> CompressionSummary:
    """Stored and non-zero parameters, dense and sparse-kernel FLOPs (torch.utils.flop_counter) and
    interleaved median latency of both."""
    inputs = as_input_tuple(example_inputs, "example_inputs")
    latency, latency_c = measure_latency([original, compressed], inputs, warmup, repeats)
    return CompressionSummary(count_parameters(original), count_parameters(compressed),
                              count_flops(original, inputs), count_flops(compressed, inputs),
                              latency, latency_c,
                              count_nonzero_parameters(original), count_nonzero_parameters(compressed),
                              count_sparse_flops(original, inputs), count_sparse_flops(compressed, inputs))


class _eval:
    """Context: module in eval mode, its previous training flags restored afterwards."""

    def __init__(self, model: nn.Module):
        self.model = model

    def __enter__(self):
        self.flags = [(m, m.training) for m in self.model.modules()]
        self.model.eval()
        return self.model

    def __exit__(self, *exc):
        for module, flag in self.flags:
            module.training = flag
