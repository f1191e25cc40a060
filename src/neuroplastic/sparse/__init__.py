"""The sparse pillar: train or compress to a target sparsity, pruning and regrowing."""

from neuroplastic.sparse.base import Sparsifier
from neuroplastic.sparse.density import erk_counts, uniform_counts
from neuroplastic.sparse.gmp import GMP
from neuroplastic.sparse.granet import GraNet
from neuroplastic.sparse.inference import (
    export_layout,
    fastest_export,
    rebuild_export,
    remove_dead_units,
    to_csr,
)
from neuroplastic.sparse.masks import SparseMasks
from neuroplastic.sparse.oneshot import SNIP, MagnitudePruning
from neuroplastic.sparse.parametrized_masks import ParametrizedMasks
from neuroplastic.sparse.rigl import RigL
from neuroplastic.sparse.set_ import SET

__all__ = [
    "GMP",
    "SET",
    "SNIP",
    "GraNet",
    "MagnitudePruning",
    "ParametrizedMasks",
    "RigL",
    "SparseMasks",
    "Sparsifier",
    "erk_counts",
    "export_layout",
    "fastest_export",
    "rebuild_export",
    "remove_dead_units",
    "to_csr",
    "uniform_counts",
]
