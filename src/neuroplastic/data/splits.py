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

    ``rows`` maps each split ("train", "val", "test") to the row of the user's file
    (0-based, in file order) that each of its samples came from; -1 marks a sample from
    a separate array (an NPZ's ``x_test``). ``row_ids`` holds the id of every file row
    when the data came with an id column.
    """

    name: str
    train: TensorDataset
    val: TensorDataset
    test: TensorDataset
    num_classes: int
    class_names: list[str] = field(default_factory=list)
    rows: dict[str, Tensor] = field(default_factory=dict)
    row_ids: list[str] | None = None

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.train.tensors[0].shape[1:])

    def locate(self, row: int) -> tuple[str, int] | None:
        """(split, position in it) of file row ``row``, or None if no split holds it."""
        for part in ("train", "val", "test"):
            hits = (self.rows.get(part, torch.empty(0, dtype=torch.long)) == row).nonzero()
            if len(hits):
                return part, int(hits[0])
        return None

    def stratified_subset(self, *, train: int | None = None, val: int | None = None,
                          test: int | None = None, seed: int = 0) -> DataSplit:
        """A copy with ``train`` training, ``val`` validation and ``test`` test samples drawn
        class-stratified (seeded; None keeps a split whole), the row maps kept.

        Raises:
            NeuroplasticError: if a size is not between the class count and the split's size.
        """
        parts: dict[str, object] = {}
        for part, size in (("train", train), ("val", val), ("test", test)):
            dataset: TensorDataset = getattr(self, part)
            if size is None or size == len(dataset):
                continue
            if not self.num_classes <= size <= len(dataset):
                raise NeuroplasticError(f"a {part} subset must hold between {self.num_classes} and "
                                        f"{len(dataset)} samples, got {size}")
            labels = dataset.tensors[1].numpy()
            keep, _ = train_test_split(np.arange(len(labels)), train_size=size, stratify=labels,
                                       random_state=seed)
            keep = np.sort(keep)
            parts[part] = subset(dataset, keep)
            if part in self.rows:
                parts.setdefault("rows", dict(self.rows))
                parts["rows"][part] = self.rows[part][torch.as_tensor(keep)]  # type: ignore[index]
        return self.same_rows(**parts)

    def same_rows(self, **changes: object) -> DataSplit:
        """A copy with ``changes`` (e.g. relabelled splits) that keeps the row maps."""
        from dataclasses import replace

        return replace(self, **changes)  # type: ignore[arg-type]


#: More classes than this is taken for a wrong label column, refused before anything is allocated.
MAX_CLASSES = 10_000


def check_labels(y: np.ndarray | Tensor, *, name: str,
                 rows: np.ndarray | list[int] | None = None, row_word: str = "row") -> np.ndarray:
    """Labels as int64, after checking they are class indices 0..K-1 with K <= MAX_CLASSES.

    Args:
        rows: how the user numbers each sample (e.g. CSV line numbers); default 0, 1, ...
        row_word: what those numbers are called in the message ("row", "line").

    Raises:
        NeuroplasticError: naming the first offending value and its row.
    """
    y_arr = np.asarray(y)
    if y_arr.ndim != 1:
        raise NeuroplasticError(f"{name}: labels must be one-dimensional, got shape {y_arr.shape}")
    where = (lambda i: int(rows[i])) if rows is not None else int
    if not (np.issubdtype(y_arr.dtype, np.integer) or np.issubdtype(y_arr.dtype, np.floating)):
        raise NeuroplasticError(f"{name}: labels must be integers, got {y_arr.dtype} values")
    if np.issubdtype(y_arr.dtype, np.floating):
        bad = np.flatnonzero(~np.isfinite(y_arr) | (np.mod(y_arr, 1) != 0))
        if len(bad):
            i = int(bad[0])
            raise NeuroplasticError(f"{name}: label {y_arr[i]:g} in {row_word} {where(i)} is not an "
                                    "integer class index")
    negative = np.flatnonzero(y_arr < 0)
    if len(negative):
        i = int(negative[0])
        raise NeuroplasticError(f"{name}: label {int(y_arr[i])} in {row_word} {where(i)} is negative; "
                                "labels are class indices 0..K-1")
    if len(y_arr) and y_arr.max() >= MAX_CLASSES:
        i = int(np.argmax(y_arr))
        raise NeuroplasticError(f"{name}: label {int(y_arr[i])} in {row_word} {where(i)} would make "
                                f"{int(y_arr[i]) + 1} classes; labels are class indices 0..K-1 with "
                                f"K <= {MAX_CLASSES}")
    return y_arr.astype(np.int64)


def as_dataset(x: np.ndarray | Tensor, y: np.ndarray | Tensor, *, name: str) -> TensorDataset:
    """Float inputs and int64 labels as a ``TensorDataset``, with shape and label checks."""
    y_t = torch.as_tensor(check_labels(y, name=name))
    x_t = torch.as_tensor(np.asarray(x), dtype=torch.float32)
    if x_t.shape[0] != y_t.shape[0]:
        raise NeuroplasticError(f"{name}: {x_t.shape[0]} inputs but {y_t.shape[0]} labels")
    if x_t.shape[0] == 0:
        raise NeuroplasticError(f"{name}: no samples")
    if not torch.isfinite(x_t).all():
        raise NeuroplasticError(f"{name}: inputs contain NaN or inf")
    return TensorDataset(x_t, y_t)


def split_dataset(name: str, x: np.ndarray, y: np.ndarray, *, test_size: float = 0.2,
                  val_size: float = 0.1, seed: int = 0,
                  class_names: list[str] | None = None) -> DataSplit:
    """Stratified train/val/test split with a fixed seed; every split must hold >= 2 classes."""
    y = check_labels(y, name=name)
    present, counts = np.unique(y, return_counts=True)
    if len(present) < 2:
        raise NeuroplasticError(f"{name}: every sample has label {int(present[0])}; classification "
                                "needs at least two classes")
    if counts.min() < 3:
        rare = int(present[np.argmin(counts)])
        raise NeuroplasticError(f"{name}: class {rare} has {int(counts.min())} sample(s); each class "
                                "needs at least 3 to appear in the train, validation and test splits")
    idx = np.arange(len(y))
    try:
        rest, test = train_test_split(idx, test_size=test_size, random_state=seed, stratify=y)
        train, val = train_test_split(
            rest, test_size=val_size / (1 - test_size), random_state=seed, stratify=y[rest]
        )
    except ValueError as err:
        raise NeuroplasticError(f"{name}: cannot split into train/val/test: {err}") from None
    num_classes = int(y.max()) + 1
    for part, rows in (("training", train), ("validation", val), ("test", test)):
        if len(np.unique(y[rows])) < 2:
            raise NeuroplasticError(f"{name}: the {part} split holds a single class; "
                                    "add samples of the other classes")
    return DataSplit(
        name=name,
        train=as_dataset(x[train], y[train], name=name),
        val=as_dataset(x[val], y[val], name=name),
        test=as_dataset(x[test], y[test], name=name),
        num_classes=num_classes,
        class_names=class_names or [str(i) for i in range(num_classes)],
        rows={"train": torch.as_tensor(train), "val": torch.as_tensor(val),
              "test": torch.as_tensor(test)},
    )


def standardize(split: DataSplit) -> DataSplit:
    """``split`` with every input feature shifted and scaled by the training split's mean and
    standard deviation (a constant feature is only shifted); validation and test use the
    training statistics, so nothing is learned from them."""
    x = split.train.tensors[0]
    mean, std = x.mean(0, keepdim=True), x.std(0, keepdim=True)
    std = torch.where(std > 0, std, torch.ones_like(std))

    def scaled(part: TensorDataset) -> TensorDataset:
        return TensorDataset((part.tensors[0] - mean) / std, part.tensors[1])

    return split.same_rows(train=scaled(split.train), val=scaled(split.val), test=scaled(split.test))


def loader(dataset: TensorDataset | Subset, *, batch_size: int = 64, shuffle: bool = False,
           seed: int = 0) -> DataLoader:
    """A ``DataLoader``; shuffling uses its own seeded generator."""
    generator = torch.Generator().manual_seed(seed) if shuffle else None
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=generator)


def subset(dataset: TensorDataset, indices: Tensor | np.ndarray | list[int]) -> TensorDataset:
    """The rows ``indices`` of a ``TensorDataset`` as a new ``TensorDataset``."""
    idx = torch.as_tensor(np.asarray(indices), dtype=torch.long)
    return TensorDataset(*(t[idx] for t in dataset.tensors))
