"""Small reference models and the bring-your-own-model factory loader."""

from neuroplastic.models.factory import build, load_factory
from neuroplastic.models.reference import MLP, SmallCNN, default_model

__all__ = ["MLP", "SmallCNN", "build", "default_model", "load_factory"]
