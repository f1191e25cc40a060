"""Small reference models and the bring-your-own-model factory loader."""

from neuroplastic.models.factory import ModelFactory, build, checked_factory, load_factory, seeded_model
from neuroplastic.models.reference import (
    ARCHITECTURES,
    MLP,
    MnistCNN,
    SmallCNN,
    build_architecture,
    default_model,
)
from neuroplastic.models.resnet import ResNet, resnet18

__all__ = ["ARCHITECTURES", "MLP", "MnistCNN", "ModelFactory", "ResNet", "SmallCNN", "build",
           "build_architecture", "checked_factory", "default_model", "load_factory", "resnet18",
           "seeded_model"]
