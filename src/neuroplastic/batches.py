"""Iterating user data: any re-iterable of ``(inputs, labels)`` batches."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import torch
from torch import Tensor, nn

from neuroplastic.errors import NeuroplasticError
from neuroplastic.losses import logits_of  # noqa: F401 - re-exported: its old home
from neuroplastic.types import Batch, Data


def require_reiterable(data: Any, name: str) -> None:
    """Raise if ``data`` is missing or would be exhausted after one pass (a generator)."""
    if data is None:
        raise NeuroplasticError(f"{name} data is missing")
    if not isinstance(data, Iterable):
        raise NeuroplasticError(f"{name} data must be an iterable of (inputs, labels) batches")
    if iter(data) is data:
        raise NeuroplasticError(
            f"{name} data is a one-shot iterator; pass something re-iterable such as a DataLoader"
        )


def iter_batches(data: Data, *, device: torch.device | str | None, name: str) -> Iterator[Batch]:
    """Yield ``(x, y)`` batches of ``data`` moved to ``device``, checking their form.

    A batch is ``(inputs, ..., labels)``: the first element is the input and the LAST the
    label, as the SSD reference code reads them; elements in between (e.g. a coarse label
    or an index) are ignored."""
    for batch in data:
        if not isinstance(batch, (tuple, list)) or len(batch) < 2:
            raise NeuroplasticError(f"{name} data must yield (inputs, labels) batches")
        x, y = batch[0], batch[-1]
        if not isinstance(x, Tensor) or not isinstance(y, Tensor):
            raise NeuroplasticError(f"{name} data must yield tensors, got {type(x).__name__}")
        if x.shape[0] != y.shape[0]:
            raise NeuroplasticError(
                f"{name} batch has {x.shape[0]} inputs but {y.shape[0]} labels"
            )
        if x.shape[0] == 0:
            continue
        if x.is_floating_point() and not bool(torch.isfinite(x).all()):
            raise NeuroplasticError(f"{name} inputs contain NaN or inf")
        yield x.to(device), y.to(device)


class ConcatData:
    """Re-iterable concatenation of several data sources (e.g. retain then forget)."""

    def __init__(self, *parts: Data) -> None:
        self.parts = parts

    def __iter__(self) -> Iterator[Batch]:
        for part in self.parts:
            yield from part


def in_dataset_order(data: Data) -> Data:
    """``data`` in its data set's own order: a shuffling ``DataLoader`` is replaced by an
    unshuffled one over the same data set (same batch size and collate function); any other
    iterable is taken as it comes."""
    from torch.utils.data import DataLoader, SequentialSampler

    if isinstance(data, DataLoader) and not isinstance(data.sampler, SequentialSampler) \
            and data.batch_size is not None:
        return DataLoader(data.dataset, batch_size=data.batch_size, shuffle=False,
                          collate_fn=data.collate_fn)
    return data


def batch_size_of(data: Data) -> int:
    """A loader's batch size, or the size of the first batch of another iterable."""
    size = getattr(data, "batch_size", None)
    if isinstance(size, int) and size > 0:
        return size
    first = next(iter(data), None)
    if first is None:
        raise NeuroplasticError("cannot take a batch size from empty data")
    return int(first[-1].shape[0])


class Rebatched:
    """Re-iterable: the samples of ``parts`` one after another (each in its data set's order,
    see :func:`in_dataset_order`), in batches of exactly ``batch_size`` (the last may be
    short), as ``DataLoader(ConcatDataset(parts), batch_size, shuffle=False)`` would give.
    Streams: holds at most one batch of leftovers, never a whole data set."""

    def __init__(self, *parts: Data, batch_size: int) -> None:
        if batch_size < 1:
            raise NeuroplasticError(f"batch_size must be >= 1, got {batch_size}")
        self.parts, self.batch_size = tuple(in_dataset_order(p) for p in parts), batch_size

    def __iter__(self) -> Iterator[Batch]:
        xs: list[Tensor] = []
        ys: list[Tensor] = []
        held = 0
        for part in self.parts:
            for x, y in iter_batches(part, device=None, name="full"):
                xs.append(x)
                ys.append(y)
                held += len(y)
                while held >= self.batch_size:
                    x_all, y_all = torch.cat(xs), torch.cat(ys)
                    yield x_all[:self.batch_size], y_all[:self.batch_size]
                    xs, ys = [x_all[self.batch_size:]], [y_all[self.batch_size:]]
                    held -= self.batch_size
        if held:
            yield torch.cat(xs), torch.cat(ys)


def count_samples(data: Data) -> int:
    """Number of samples in ``data`` (one pass, no forward)."""
    return sum(int(batch[-1].shape[0]) for batch in data)


def labels_of(data: Data) -> Tensor:
    """All labels of ``data`` concatenated (one pass, no forward)."""
    parts = [batch[-1].reshape(-1).cpu() for batch in data]
    return torch.cat(parts) if parts else torch.empty(0, dtype=torch.long)


def model_device(model: nn.Module) -> torch.device:
    """Device of the model's first parameter (CPU for a parameterless model)."""
    for param in model.parameters():
        return param.device
    return torch.device("cpu")


@contextmanager
def eval_mode(model: nn.Module, *, training: bool = False) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode (train mode with ``training=True``) for the body and
    restore each module's mode after."""
    modes = {m: m.training for m in model.modules()}
    model.train(training)
    try:
        yield model
    finally:
        for module, mode in modes.items():
            module.training = mode


def train_mode(model: nn.Module) -> AbstractContextManager[nn.Module]:
    """Put ``model`` in train mode for the body and restore each module's mode after."""
    return eval_mode(model, training=True)


@contextmanager
def seeded_rng(seed: int, device: torch.device | str | None = None) -> Iterator[None]:
    """Run the block with torch's global RNG seeded to ``seed`` (CPU, and ``device``'s own
    generator when it is a CUDA device), and restore the caller's RNG state after: what a
    model draws while training (dropout, random regrowth without a generator) is then the
    same on every call, whatever ran before."""
    device = torch.device(device) if device is not None else torch.device("cpu")
    cuda = [device.index if device.index is not None else torch.cuda.current_device()] \
        if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        # only the generators fork_rng restores (torch.manual_seed would reseed every GPU's)
        torch.default_generator.manual_seed(seed)
        for index in cuda:
            with torch.cuda.device(index):
                torch.cuda.manual_seed(seed)
        yield
