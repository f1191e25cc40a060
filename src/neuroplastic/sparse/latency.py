"""Wall-clock latency of inference, measured honestly (warm-up, median of repeats)."""

from __future__ import annotations

import statistics
import time

import torch
from torch import Tensor, nn


@torch.no_grad()
def latency(model: nn.Module, inputs: Tensor, *, repeats: int = 30, warmup: int = 5) -> float:
    """Median seconds of one forward pass of ``inputs`` in eval mode."""
    model.eval()
    for _ in range(warmup):
        model(inputs)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        model(inputs)
        times.append(time.perf_counter() - start)
    return statistics.median(times)
