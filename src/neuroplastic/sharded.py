"""FSDP2 (``torch.distributed.fsdp.fully_shard``) models: their parameters are DTensors, each
rank holding a slice along dimension 0, and every forward pass gathers each layer's weights
with a collective, so every rank must run every forward and backward pass in step.

What the library does with such a model (the importance estimators, ``dampen_``, the
selectors and ``SparseMasks``):

- **scores, masks and factors live in the parameter's layout**: an estimator returns DTensors
  sharded like the parameters (``.full_tensor()`` gathers one), and a whole tensor given for
  a sharded parameter is cut to this rank's slice locally (:func:`like_parameter`);
- **counts and checks are global**: a reduction over a DTensor is turned into one value on
  every rank (:func:`whole`), so all ranks take the same decision (a NaN on one rank's slice
  raises on every rank);
- **batches are split by rows** (:func:`batch_parts`): every rank runs every global batch on
  its part, and FSDP's reduce-scatter (an average over the ranks) of a loss scaled by
  ``world * n_r / n`` is the whole batch's mean gradient, exactly as one process computes it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import torch
from torch import Tensor, nn

from neuroplastic import distributed
from neuroplastic.batches import iter_batches
from neuroplastic.errors import NeuroplasticError


def is_sharded(tensor: object) -> bool:
    """True for a DTensor (an FSDP2 parameter, its gradient, or a score computed from them)."""
    if not torch.distributed.is_available():
        return False
    from torch.distributed.tensor import DTensor

    return isinstance(tensor, DTensor)


def has_sharded_parameters(model: nn.Module) -> bool:
    """True when ``model`` holds FSDP2-sharded (DTensor) parameters."""
    return any(is_sharded(p) for p in model.parameters())


def whole(tensor: Tensor) -> Tensor:
    """``tensor`` gathered into one ordinary tensor on every rank if it is a DTensor (a
    reduction's partial results are reduced), else ``tensor`` itself."""
    return tensor.full_tensor() if is_sharded(tensor) else tensor  # type: ignore[attr-defined]


def like_parameter(tensor: Tensor, param: Tensor) -> Tensor:
    """``tensor`` in ``param``'s layout: this rank's slice (a DTensor sharded as ``param``,
    cut locally, no communication) when ``param`` is sharded and ``tensor`` whole; the whole
    tensor when ``param`` is an ordinary tensor and ``tensor`` a DTensor; else unchanged."""
    if is_sharded(param) and not is_sharded(tensor):
        from torch.distributed.tensor import distribute_tensor

        return distribute_tensor(tensor.to(param.device), param.device_mesh,  # type: ignore[attr-defined]
                                 param.placements, src_data_rank=None)  # type: ignore[attr-defined]
    if not is_sharded(param) and is_sharded(tensor):
        return whole(tensor)
    return tensor


def refuse(model: nn.Module, what: str, why: str) -> None:
    """Raise one line if ``model`` is FSDP-sharded and ``what`` cannot run on it (``why``)."""
    if has_sharded_parameters(model):
        raise NeuroplasticError(f"{what} does not support FSDP-sharded (DTensor) parameters: {why}")


def batch_parts(data: Any, device: torch.device, *, name: str) -> Iterator[tuple[Tensor, Tensor, float]]:
    """``(x_r, y_r, share_r)`` for every global batch, every rank in step (``share_r = n_r / n``).

    The same whole data on every rank (or a :class:`~neuroplastic.distributed.RankBatches`
    view, whose whole data is used) is cut by rows, as :func:`neuroplastic.loop.fit` cuts it.
    Other data is taken as this rank's part of each global batch (FSDP's own data-parallel
    convention, a ``DistributedSampler`` for instance): the ranks' ``i``-th batches together
    are global batch ``i``, and every rank must pass the same number of batches (checked:
    one rank running out first is an error on every rank, not a hang).
    """
    if isinstance(data, distributed.RankBatches):
        for x, y in iter_batches(data.data, device=device, name=name):
            part_x, part_y = distributed.shard(x), distributed.shard(y)
            yield part_x, part_y, part_x.shape[0] / max(x.shape[0], 1)
        return
    batches: Iterable[tuple[Tensor, Tensor]] = iter_batches(data, device=device, name=name)
    iterator = iter(batches)
    while True:
        batch = next(iterator, None)
        count = torch.tensor([0.0 if batch is None else float(batch[0].shape[0]),
                              0.0 if batch is None else 1.0], dtype=torch.float64)
        total, having = distributed.all_reduce_sum_(count).tolist()
        if having == 0:
            return
        if having != distributed.world_size():
            raise NeuroplasticError(f"{name}: the ranks passed different numbers of batches to an "
                                    "FSDP-sharded model (every rank must run every batch)")
        assert batch is not None
        yield batch[0], batch[1], batch[0].shape[0] / max(total, 1.0)
