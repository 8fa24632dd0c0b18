"""Size, FLOPs and latency of a model, and their ratios between an original and a compressed one."""
from __future__ import annotations

import contextlib
import statistics
import time
from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ._util import as_input_tuple


def count_parameters(model: nn.Module) -> int:
    """Number of parameter entries (each shared tensor once)."""
    return sum(p.numel() for p in model.parameters())


def count_flops(model: nn.Module, example_inputs) -> int:
    """FLOPs of one eval-mode forward pass on `example_inputs`, counted by
    `torch.utils.flop_counter.FlopCounterMode` (conv/matmul ops; a multiply-add is 2 FLOPs)."""
    inputs = as_input_tuple(example_inputs, "example_inputs")
    with _eval(model), torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(*inputs)
    return int(counter.get_total_flops())


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
    """Parameters, FLOPs and median latency of both models; ratios are compressed / original."""

    params: int
    params_compressed: int
    flops: int
    flops_compressed: int
    latency_ms: float
    latency_ms_compressed: float

    @property
    def params_ratio(self) -> float:
        return self.params_compressed / self.params

    @property
    def flops_ratio(self) -> float:
        return self.flops_compressed / self.flops if self.flops else float("nan")

    @property
    def latency_ratio(self) -> float:
        return self.latency_ms_compressed / self.latency_ms

    def as_dict(self) -> dict:
        return {**asdict(self), "params_ratio": self.params_ratio,
                "flops_ratio": self.flops_ratio, "latency_ratio": self.latency_ratio}


def summarize(original: nn.Module, compressed: nn.Module, example_inputs, warmup: int = 3,
              repeats: int = 20) -> CompressionSummary:
    """Parameters, FLOPs (torch.utils.flop_counter) and interleaved median latency of both."""
    inputs = as_input_tuple(example_inputs, "example_inputs")
    latency, latency_c = measure_latency([original, compressed], inputs, warmup, repeats)
    return CompressionSummary(count_parameters(original), count_parameters(compressed),
                              count_flops(original, inputs), count_flops(compressed, inputs),
                              latency, latency_c)


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
