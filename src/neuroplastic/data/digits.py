"""The default data: scikit-learn's handwritten digits (shipped with scikit-learn, no download)."""

from __future__ import annotations

from sklearn.datasets import load_digits

from neuroplastic.data.splits import DataSplit, split_dataset


def digits(*, seed: int = 0) -> DataSplit:
    """8x8 grey digits 0-9 (1,797 images) as (1, 8, 8) inputs scaled to [0, 1].

    Fixed stratified split: 70% train (1,257), 10% validation (180), 20% test (360).
    """
    bunch = load_digits()
    x = (bunch.images / 16.0).astype("float32")[:, None, :, :]
    return split_dataset("digits", x, bunch.target, seed=seed,
                         class_names=[str(d) for d in range(10)])


#: Coarse labels for the sub-class scenario: parity, so each coarse class
#: holds five fine digits (as each CIFAR-20 superclass holds five CIFAR-100 classes).
COARSE_NAMES = ["even", "odd"]


def coarse_label(digit: int) -> int:
    """Coarse (parity) label of a digit."""
    return digit % 2
