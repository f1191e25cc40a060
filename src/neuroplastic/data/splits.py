"""A labelled data set split into train / validation / test, as tensors."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from sklearn.model_selection import train_test_split
from torch import Tensor
from torch.utils.data import DataLoader, Subset, TensorDataset

from neuroplastic.errors import NeuroplasticError


@dataclass
class DataSplit:
    """Train/validation/test tensors of one classification data set.

    ``val`` is never trained on by the reference recipe and never used for
    reporting; methods may use it for choices (e.g. ssd-auto's target). The
    test split is only for reporting.
    """

    name: str
    train: TensorDataset
    val: TensorDataset
    test: TensorDataset
    num_classes: int
    class_names: list[str] = field(default_factory=list)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.train.tensors[0].shape[1:])


def as_dataset(x: np.ndarray | Tensor, y: np.ndarray | Tensor, *, name: str) -> TensorDataset:
    """Float inputs and int64 labels as a ``TensorDataset``, with shape checks."""
    x_t = torch.as_tensor(np.asarray(x), dtype=torch.float32)
    y_arr = np.asarray(y)
    if y_arr.ndim != 1:
        raise NeuroplasticError(f"{name}: labels must be one-dimensional, got shape {y_arr.shape}")
    if not np.issubdtype(y_arr.dtype, np.integer) and not np.all(np.mod(y_arr, 1) == 0):
        raise NeuroplasticError(f"{name}: labels must be integers")
    y_t = torch.as_tensor(y_arr.astype(np.int64))
    if x_t.shape[0] != y_t.shape[0]:
        raise NeuroplasticError(f"{name}: {x_t.shape[0]} inputs but {y_t.shape[0]} labels")
    if x_t.shape[0] == 0:
        raise NeuroplasticError(f"{name}: no samples")
    if (y_t < 0).any():
        raise NeuroplasticError(f"{name}: labels must be >= 0")
    if not torch.isfinite(x_t).all():
        raise NeuroplasticError(f"{name}: inputs contain NaN or inf")
    return TensorDataset(x_t, y_t)


def split_dataset(name: str, x: np.ndarray, y: np.ndarray, *, test_size: float = 0.2,
                  val_size: float = 0.1, seed: int = 0,
                  class_names: list[str] | None = None) -> DataSplit:
    """Stratified train/val/test split with a fixed seed."""
    y = np.asarray(y)
    idx = np.arange(len(y))
    try:
        rest, test = train_test_split(idx, test_size=test_size, random_state=seed, stratify=y)
        train, val = train_test_split(
            rest, test_size=val_size / (1 - test_size), random_state=seed, stratify=y[rest]
        )
    except ValueError as err:
        raise NeuroplasticError(f"{name}: cannot split into train/val/test: {err}") from None
    num_classes = int(y.max()) + 1
    return DataSplit(
        name=name,
        train=as_dataset(x[train], y[train], name=name),
        val=as_dataset(x[val], y[val], name=name),
        test=as_dataset(x[test], y[test], name=name),
        num_classes=num_classes,
        class_names=class_names or [str(i) for i in range(num_classes)],
    )


def loader(dataset: TensorDataset | Subset, *, batch_size: int = 64, shuffle: bool = False,
           seed: int = 0) -> DataLoader:
    """A ``DataLoader``; shuffling uses its own seeded generator."""
    generator = torch.Generator().manual_seed(seed) if shuffle else None
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=generator)


def subset(dataset: TensorDataset, indices: Tensor | np.ndarray | list[int]) -> TensorDataset:
    """The rows ``indices`` of a ``TensorDataset`` as a new ``TensorDataset``."""
    idx = torch.as_tensor(np.asarray(indices), dtype=torch.long)
    return TensorDataset(*(t[idx] for t in dataset.tensors))
