"""Importance estimators: ``estimate(model, data, *, loss_fn=None) -> Scores``."""

from neuroplastic.importance.base import BatchGradientEstimator, ImportanceEstimator, cross_entropy
from neuroplastic.importance.cache import ImportanceCache, data_fingerprint, model_fingerprint
from neuroplastic.importance.fisher import Fisher
from neuroplastic.importance.simple import Gradient, LossFree, Magnitude, Taylor

__all__ = [
    "BatchGradientEstimator",
    "Fisher",
    "Gradient",
    "ImportanceCache",
    "ImportanceEstimator",
    "LossFree",
    "Magnitude",
    "Taylor",
    "cross_entropy",
    "data_fingerprint",
    "model_fingerprint",
]
