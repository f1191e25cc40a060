"""Wall-clock latency of inference, measured honestly (warm-up, interleaved, medians)."""

from __future__ import annotations

import statistics
import time

import torch
from torch import Tensor, nn


@torch.no_grad()
def latencies(models: dict[str, nn.Module], inputs: Tensor, *, repeats: int = 30,
              warmup: int = 5) -> dict[str, float]:
    """Median seconds of one forward pass of ``inputs`` through each model, in eval mode.

    The models take turns within every repeat, so a slow spell of the machine hits all of
    them alike instead of whichever happened to be timed then.
    """
    for model in models.values():
        model.eval()
        for _ in range(warmup):
            model(inputs)
    times: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(repeats):
        for name, model in models.items():
            start = time.perf_counter()
            model(inputs)
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}
