"""Small reference models and the bring-your-own-model factory loader."""

from neuroplastic.models.factory import ModelFactory, build, checked_factory, load_factory, seeded_model
from neuroplastic.models.reference import MLP, SmallCNN, default_model

__all__ = ["MLP", "ModelFactory", "SmallCNN", "build", "checked_factory", "default_model",
           "load_factory", "seeded_model"]
