"""Two-dimensional toy problems from scikit-learn's generators (no download)."""

from __future__ import annotations

from neuroplastic.data.splits import DataSplit, split_dataset


def circles(*, seed: int = 0, samples: int = 1000, noise: float = 0.1, factor: float = 0.5) -> DataSplit:
    """Two concentric noisy circles (``sklearn.datasets.make_circles``): not linearly
    separable, so a linear model scores near chance. 70/10/20 stratified split."""
    from sklearn.datasets import make_circles

    x, y = make_circles(n_samples=samples, noise=noise, factor=factor, random_state=seed)
    return split_dataset("circles", x.astype("float32"), y, seed=seed, class_names=["outer", "inner"])


def moons(*, seed: int = 0, samples: int = 1000, noise: float = 0.2) -> DataSplit:
    """Two interleaving half-moons (``sklearn.datasets.make_moons``). 70/10/20 split."""
    from sklearn.datasets import make_moons

    x, y = make_moons(n_samples=samples, noise=noise, random_state=seed)
    return split_dataset("moons", x.astype("float32"), y, seed=seed, class_names=["upper", "lower"])
