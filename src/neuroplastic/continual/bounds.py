"""The bounds every continual method sits between: finetune (plain sequential training)
and joint (train on every task seen so far)."""

from __future__ import annotations

from torch.utils.data import Dataset

from neuroplastic.continual.base import ContinualMethod, seen_so_far
from neuroplastic.data.streams import Stream
from neuroplastic.registry import register


@register("finetune", kind="continual", needs=('labels',))
class Finetune(ContinualMethod):
    """Finetune: train each task in turn with nothing to protect the old ones (lower bound)."""

    baseline = True


@register("joint", kind="continual", needs=('labels',))
class Joint(ContinualMethod):
    """Joint: train task t on the data of tasks 0..t together (upper bound; not continual)."""

    baseline = True

    def training_data(self, stream: Stream, index: int) -> Dataset:
        return seen_so_far(stream, index)
