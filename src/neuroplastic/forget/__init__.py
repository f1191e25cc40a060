"""The forget pillar: remove a class, samples or a subset from a trained model."""

from neuroplastic.forget.base import Unlearner, UnlearnResult
from neuroplastic.forget.baselines import Finetune, NegGradPlus, RandomLabels, Retrain
from neuroplastic.forget.ssd import LFSSD, SSD
from neuroplastic.forget.ssd_auto import SSDAuto

__all__ = [
    "LFSSD",
    "SSD",
    "Finetune",
    "NegGradPlus",
    "RandomLabels",
    "Retrain",
    "SSDAuto",
    "UnlearnResult",
    "Unlearner",
]
