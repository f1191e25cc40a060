"""Several processes (torchrun): the process group, each rank's shard of a batch, and the
reductions that make N processes compute what one process computes. Every function is a
no-op (or the identity) in a single process.

The rule everywhere: each global batch is cut into ``world_size`` contiguous parts
(``torch.tensor_split``), rank ``r`` works on part ``r``, and sums are all-reduced before
anything divides by a count. Gradients are reduced as ``sum_r (n_r / n) * grad_r``, so a
batch that does not divide evenly still gives the full batch's mean gradient.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from neuroplastic.errors import NeuroplasticError
from neuroplastic.runs import launched_by_torchrun

TIMEOUT_ENV = "NEUROPLASTIC_COLLECTIVE_TIMEOUT"
DEFAULT_TIMEOUT_SECONDS = 300
"""How long a collective waits for the other ranks before failing (``$NEUROPLASTIC_COLLECTIVE_TIMEOUT``
overrides it): a rank that died without torchrun noticing cannot hang the others forever."""


_alone = [False]


def is_distributed() -> bool:
    """True when a default process group is initialised with more than one process (and
    this process is not inside :func:`alone`)."""
    return not _alone[0] and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


@contextmanager
def alone() -> Iterator[None]:
    """In the body this process works by itself, as if there were no process group: no
    sharding and no collectives (for work split between ranks by whole units, such as
    U-LiRA's shadow models, each trained by one rank)."""
    before = _alone[0]
    _alone[0] = True
    try:
        yield
    finally:
        _alone[0] = before


def owns(index: int) -> bool:
    """True when this rank does unit ``index`` of work dealt out round-robin (always in one
    process)."""
    return index % world_size() == rank()


def rank() -> int:
    """This process's rank (0 outside a process group)."""
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    """Processes in the group (1 outside a process group)."""
    return dist.get_world_size() if is_distributed() else 1


def is_main_process() -> bool:
    """True on rank 0 and in a single process: the one that prints and writes files."""
    return rank() == 0


def collective_timeout() -> timedelta:
    """The collective timeout: ``$NEUROPLASTIC_COLLECTIVE_TIMEOUT`` seconds, default 300."""
    raw = os.environ.get(TIMEOUT_ENV, str(DEFAULT_TIMEOUT_SECONDS))
    try:
        seconds = float(raw)
    except ValueError:
        seconds = -1.0
    if not seconds > 0:
        raise NeuroplasticError(f"${TIMEOUT_ENV} must be a number of seconds > 0, got {raw!r}")
    return timedelta(seconds=seconds)


def init_from_environment() -> bool:
    """Join the process group torchrun describes in the environment (``RANK``, ``WORLD_SIZE``,
    ``MASTER_ADDR``...): gloo for CPU tensors, plus NCCL for CUDA tensors where this build and
    machine have it, one CUDA device per local rank. Returns False (and does nothing) when
    the process was not launched with several ranks or the group already exists."""
    if not launched_by_torchrun() or (dist.is_available() and dist.is_initialized()):
        return False
    if not dist.is_available():
        raise NeuroplasticError("this torch build has no torch.distributed; run one process")
    backend = "gloo"
    if torch.cuda.is_available() and dist.is_nccl_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        backend = "cpu:gloo,cuda:nccl"
    dist.init_process_group(backend=backend, timeout=collective_timeout())
    return True


def leave_group() -> None:
    """Leave the process group after a barrier, so no rank tears it down while another still
    uses it."""
    if dist.is_available() and dist.is_initialized():
        if dist.get_world_size() > 1:
            dist.barrier()
        dist.destroy_process_group()


_share = [1.0]


def set_batch_share(share: float) -> None:
    """Record this rank's share of the current batch (``n_r / n``; :func:`neuroplastic.loop.fit`
    sets it for every batch), for :func:`reduce_batch_means_`."""
    _share[0] = share


def batch_share() -> float:
    """This rank's share of the current batch (1.0 in one process)."""
    return _share[0] if is_distributed() else 1.0


def reduce_batch_means_(tensors: Sequence[Tensor]) -> None:
    """Turn per-rank means over the current batch's parts (a dense gradient captured in the
    backward pass) into the full batch's mean, in place: ``sum_r share_r * t_r``."""
    if not is_distributed():
        return
    share = batch_share()
    with torch.no_grad():
        for tensor in tensors:
            all_reduce_sum_(tensor.mul_(share))


def shard(tensor: Tensor) -> Tensor:
    """This rank's contiguous part of a batch (the whole batch in one process)."""
    if not is_distributed():
        return tensor
    return torch.tensor_split(tensor, world_size())[rank()]


def shard_start(rows: int) -> int:
    """Index of this rank's first row in a batch of ``rows`` cut by :func:`shard` (0 in one
    process): ``torch.tensor_split`` gives the first ``rows % N`` ranks one row more."""
    if not is_distributed():
        return 0
    size, extra = divmod(rows, world_size())
    return size * rank() + min(rank(), extra)


class RankBatches:
    """Re-iterable view of batch data holding this rank's whole batches: batches ``r``,
    ``r + N``, ``r + 2N``... of the data (all of them in one process). The importance
    estimators sum over batches and all-reduce sums and counts, so N processes given their
    ``RankBatches`` compute the scores one process computes from all batches, whatever the
    estimator does within a batch (a per-batch squared gradient included)."""

    def __init__(self, data: Iterable[Any]) -> None:
        self.data = data

    def __iter__(self) -> Iterator[Any]:
        world, me = world_size(), rank()
        for index, batch in enumerate(self.data):
            if index % world == me:
                yield batch


def is_rank_part(data: Any) -> bool:
    """True when ``data`` already holds this rank's part only: a DataLoader with a
    ``DistributedSampler``."""
    from torch.utils.data import DistributedSampler

    return isinstance(getattr(data, "sampler", None), DistributedSampler)


def rank_batches(data: Any) -> Any:
    """``data`` as this rank's :class:`RankBatches` in a process group, else ``data`` itself
    (also when it is already this rank's, :func:`is_rank_part`). The forget methods and the
    importance cache call this: under torchrun every rank passes them the same whole data."""
    if not is_distributed() or is_rank_part(data):
        return data
    return RankBatches(data)


def all_reduce_sums_(sums: dict[str, Tensor], count: int) -> int:
    """Sum ``sums`` (in place) and ``count`` over all processes; return the global count.

    Estimators accumulate per-process sums and counts and divide only after
    this, so one process or several give the same scores.
    """
    if not is_distributed():
        return count
    for tensor in sums.values():
        all_reduce_sum_(tensor)
    total = torch.tensor([count], dtype=torch.float64, device=next(iter(sums.values())).device)
    return int(all_reduce_sum_(total).item())


def all_reduce_sum_(tensor: Tensor) -> Tensor:
    """``tensor`` summed over all processes, in place (unchanged in one process)."""
    if is_distributed():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_gather_rows(rows: Tensor) -> Tensor:
    """Every rank's ``rows`` stacked in rank order along dimension 0 (ranks may hold different
    numbers of rows; ``rows`` itself in one process). Each rank writes its rows at its offset
    into zeros and the ranks' matrices are summed: adding zeros leaves every row exact."""
    if not is_distributed():
        return rows
    counts = torch.zeros(world_size(), dtype=torch.float64, device=rows.device)
    counts[rank()] = rows.shape[0]
    sizes = [int(c) for c in all_reduce_sum_(counts).tolist()]
    start = sum(sizes[: rank()])
    stacked = rows.new_zeros((sum(sizes), *rows.shape[1:]))
    stacked[start: start + rows.shape[0]] = rows
    return all_reduce_sum_(stacked)


def all_reduce_max_(tensor: Tensor) -> Tensor:
    """``tensor``'s elementwise maximum over all processes, in place (unchanged in one process)."""
    if is_distributed():
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return tensor


def all_reduce_sum(value: float, *, device: torch.device | str = "cpu") -> float:
    """``value`` summed over all processes (itself in one process)."""
    if not is_distributed():
        return value
    return float(all_reduce_sum_(torch.tensor([value], dtype=torch.float64, device=device)).item())


def any_process(flag: bool, *, device: torch.device | str = "cpu") -> bool:
    """True on every rank when ``flag`` is true on any rank (so all ranks stop together)."""
    if not is_distributed():
        return flag
    value = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item() > 0)


def all_reduce_gradients_(params: Sequence[nn.Parameter], weight: float) -> None:
    """Replace every ``.grad`` by ``sum_r weight_r * grad_r`` over the ranks, in one flat
    all-reduce (the collective DDP runs, after the backward pass instead of overlapping it).

    ``weight`` is this rank's share of the batch (``n_r / n``). A parameter that has a
    gradient on some rank gets one on every rank (zeros where it had none), so the optimizer
    steps the same parameters everywhere; one that has none anywhere keeps ``None``.
    """
    if not is_distributed() or not params:
        return
    device = params[0].device
    present = torch.tensor([p.grad is not None for p in params], dtype=torch.float32, device=device)
    dist.all_reduce(present, op=dist.ReduceOp.MAX)
    stepped = [p for p, has in zip(params, present.tolist(), strict=True) if has]
    if not stepped:
        return
    for p in stepped:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    if weight == 0.0:  # no part of this batch: whatever a rule wrote on zero rows (NaN) counts 0
        flat = torch.zeros(sum(p.numel() for p in stepped), dtype=stepped[0].grad.dtype, device=device)
    else:
        flat = torch.cat([p.grad.reshape(-1) * weight for p in stepped])
    all_reduce_sum_(flat)
    start = 0
    for p in stepped:
        size = p.numel()
        p.grad.copy_(flat[start:start + size].view_as(p.grad))
        start += size


def broadcast_module_(model: nn.Module) -> None:
    """Copy rank 0's parameters and buffers to every rank, as DDP does when it wraps a model."""
    if not is_distributed():
        return
    with torch.no_grad():
        for tensor in [*(p.data for p in model.parameters()), *model.buffers()]:
            dist.broadcast(tensor, src=0)


def average_(tensors: Sequence[Tensor]) -> None:
    """Replace each tensor by its mean over the ranks (in place)."""
    if not is_distributed():
        return
    world = world_size()
    with torch.no_grad():
        for tensor in tensors:
            all_reduce_sum_(tensor).div_(world)
