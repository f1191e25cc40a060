"""Small reference models for the default data; any ``nn.Module`` works with neuroplastic."""

from __future__ import annotations

import math

from torch import Tensor, nn


class MLP(nn.Module):
    """Fully connected classifier on flattened inputs (``batch_norm``: BatchNorm1d after
    every hidden layer)."""

    def __init__(self, in_features: int, num_classes: int, *,
                 hidden: tuple[int, ...] = (256, 128), batch_norm: bool = False) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = in_features
        for size in hidden:
            norm = [nn.BatchNorm1d(size)] if batch_norm else []
            layers += [nn.Linear(width, size), *norm, nn.ReLU()]
            width = size
        layers.append(nn.Linear(width, num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class SmallCNN(nn.Module):
    """Two 3x3 convolutions, a 2x2 max-pool and a two-layer head (``batch_norm``:
    BatchNorm2d after each convolution)."""

    def __init__(self, in_channels: int, num_classes: int, *, image_size: tuple[int, int] = (8, 8),
                 width: int = 32, batch_norm: bool = False) -> None:
        super().__init__()

        def norm(channels: int) -> list[nn.Module]:
            return [nn.BatchNorm2d(channels)] if batch_norm else []

        self.features = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1), *norm(width), nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, padding=1), *norm(2 * width), nn.ReLU(),
            nn.MaxPool2d(2),
        )
        pooled = 2 * width * (image_size[0] // 2) * (image_size[1] // 2)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(pooled, 128), nn.ReLU(),
                                  nn.Linear(128, num_classes))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


class MnistCNN(nn.Module):
    """The CNN of PyTorch's MNIST example (``pytorch/examples``, ``mnist/main.py``) for 28x28
    images: two unpadded 3x3 convolutions (32, 64 channels), a 2x2 max-pool, dropout 0.25, a
    128-unit layer, dropout 0.5 (1.2M parameters for one channel and 10 classes). A standard
    small CNN: on Fashion-MNIST such networks reach about 91-93% test accuracy."""

    def __init__(self, in_channels: int, num_classes: int, *, image_size: tuple[int, int] = (28, 28)) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 32, 3), nn.ReLU(), nn.Conv2d(32, 64, 3), nn.ReLU(), nn.MaxPool2d(2),
            nn.Dropout(0.25))
        pooled = 64 * ((image_size[0] - 4) // 2) * ((image_size[1] - 4) // 2)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(pooled, 128), nn.ReLU(), nn.Dropout(0.5),
                                  nn.Linear(128, num_classes))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


ARCHITECTURES = ("mlp", "cnn", "resnet18")


def build_architecture(arch: str, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """A built-in model by name: ``mlp`` (:class:`MLP`, 256-128), ``cnn`` (:class:`MnistCNN`,
    images only) or ``resnet18`` (:func:`~neuroplastic.models.resnet.resnet18`, CIFAR stem,
    images only)."""
    from neuroplastic.errors import NeuroplasticError

    if arch == "mlp":
        return MLP(math.prod(input_shape), num_classes)
    if arch not in ARCHITECTURES:
        raise NeuroplasticError(f"--model-arch must be one of {', '.join(ARCHITECTURES)}, got {arch!r}")
    if len(input_shape) != 3 or min(input_shape[1:]) < 5:
        raise NeuroplasticError(f"--model-arch {arch} needs (channels, height, width) images of at least "
                                f"5x5, and this data's inputs have shape {tuple(input_shape)}")
    if arch == "cnn":
        return MnistCNN(input_shape[0], num_classes, image_size=(input_shape[1], input_shape[2]))
    from neuroplastic.models.resnet import resnet18

    return resnet18(num_classes, in_channels=input_shape[0])


def default_model(input_shape: tuple[int, ...], num_classes: int, *, batch_norm: bool = False) -> nn.Module:
    """``SmallCNN`` for (C, H, W) inputs, ``MLP`` for anything else."""
    if len(input_shape) == 3:
        return SmallCNN(input_shape[0], num_classes, image_size=(input_shape[1], input_shape[2]),
                        batch_norm=batch_norm)
    return MLP(math.prod(input_shape), num_classes, batch_norm=batch_norm)
