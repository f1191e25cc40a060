"""Sum reductions across processes under torchrun; no-ops in a single process."""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor


def is_distributed() -> bool:
    """True when a default process group is initialised with more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def all_reduce_sums_(sums: dict[str, Tensor], count: int) -> int:
    """Sum ``sums`` (in place) and ``count`` over all processes; return the global count.

    Estimators accumulate per-process sums and counts and divide only after
    this, so one process or several give the same scores.
    """
    if not is_distributed():
        return count
    for tensor in sums.values():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    total = torch.tensor([count], dtype=torch.float64, device=next(iter(sums.values())).device)
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return int(total.item())
