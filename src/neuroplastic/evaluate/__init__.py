"""Honest numbers for interventions: accuracies, membership inference, gaps to retrain."""

from neuroplastic.evaluate.forgetting import evaluate_forgetting, gaps
from neuroplastic.evaluate.mia import entropy_mia, loss_threshold_mia
from neuroplastic.evaluate.outputs import Outputs, accuracy, collect

__all__ = [
    "Outputs",
    "accuracy",
    "collect",
    "entropy_mia",
    "evaluate_forgetting",
    "gaps",
    "loss_threshold_mia",
]
