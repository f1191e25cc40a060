"""Data: the shipped default (digits), loaders for real formats, forgetting scenarios."""

from neuroplastic.data.digits import COARSE_NAMES, coarse_label, digits
from neuroplastic.data.loaders import (
    load_cifar10_binary,
    load_csv,
    load_data,
    load_image_folder,
    load_npz,
    load_torchvision,
)
from neuroplastic.data.mnist1d import mnist1d
from neuroplastic.data.scenarios import (
    SCENARIOS,
    ForgetScenario,
    add_trigger,
    corrective,
    full_class,
    given_rows,
    random_samples,
    request_loaders,
    rows_of_ids,
    sub_class,
)
from neuroplastic.data.splits import DataSplit, as_dataset, loader, split_dataset, standardize, subset
from neuroplastic.data.toy import circles, moons

__all__ = [
    "COARSE_NAMES",
    "SCENARIOS",
    "DataSplit",
    "ForgetScenario",
    "add_trigger",
    "as_dataset",
    "circles",
    "coarse_label",
    "corrective",
    "digits",
    "full_class",
    "given_rows",
    "load_cifar10_binary",
    "load_csv",
    "load_data",
    "load_image_folder",
    "load_npz",
    "load_torchvision",
    "loader",
    "mnist1d",
    "moons",
    "random_samples",
    "request_loaders",
    "rows_of_ids",
    "split_dataset",
    "standardize",
    "sub_class",
    "subset",
]
