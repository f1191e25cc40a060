"""Shared type aliases of the substrate.

``Scores`` and ``Masks`` are plain dicts keyed by parameter name, each value
the same shape as the parameter it describes. Data is any re-iterable of
``(inputs, labels)`` batches, e.g. a ``torch.utils.data.DataLoader``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from torch import Tensor

Scores = dict[str, Tensor]
Masks = dict[str, Tensor]
Batch = tuple[Tensor, Tensor]
Data = Iterable[Batch]
LossFn = Callable[[Tensor, Tensor], Tensor]
