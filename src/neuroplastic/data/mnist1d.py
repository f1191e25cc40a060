"""MNIST-1D (Greydanus 2020): a harder default, generated procedurally (no download)."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

from neuroplastic.data.splits import DataSplit, as_dataset, split_dataset


@lru_cache(maxsize=2)
def _generate(seed: int) -> dict[str, np.ndarray]:
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args(as_dict=False)  # the published generator parameters
    args.seed = seed
    return make_dataset(args)  # procedural; never calls the package's downloader


def mnist1d(*, seed: int = 42) -> DataSplit:
    """MNIST-1D with its published generator settings (5,000 sequences of length 40, 10
    classes, seed 42): its own 4,000 / 1,000 train / test split, 10% of train held out for
    validation. Inputs are (40,) float vectors."""
    data = _generate(seed)
    x, y = data["x"].astype("float32"), data["y"]
    split = split_dataset("mnist1d", x, y, test_size=0.1, val_size=0.1, seed=0)
    inner_test = split.test.tensors
    split.train = as_dataset(np.concatenate([split.train.tensors[0].numpy(), inner_test[0].numpy()]),
                             np.concatenate([split.train.tensors[1].numpy(), inner_test[1].numpy()]),
                             name="mnist1d")
    split.test = as_dataset(data["x_test"].astype("float32"), data["y_test"], name="mnist1d test")
    split.rows = {"train": torch.cat([split.rows["train"], split.rows["test"]]), "val": split.rows["val"],
                  "test": torch.full((len(split.test),), -1, dtype=torch.long)}
    return split
