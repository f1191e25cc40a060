"""Small reference models for the default data; any ``nn.Module`` works with neuroplastic."""

from __future__ import annotations

import math

from torch import Tensor, nn


class MLP(nn.Module):
    """Fully connected classifier on flattened inputs."""

    def __init__(self, in_features: int, num_classes: int, *,
                 hidden: tuple[int, ...] = (256, 128)) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = in_features
        for size in hidden:
            layers += [nn.Linear(width, size), nn.ReLU()]
            width = size
        layers.append(nn.Linear(width, num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class SmallCNN(nn.Module):
    """Two 3x3 convolutions, a 2x2 max-pool and a two-layer head."""

    def __init__(self, in_channels: int, num_classes: int, *, image_size: tuple[int, int] = (8, 8),
                 width: int = 32) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1), nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(),
            nn.MaxPool2d(2),
        )
        pooled = 2 * width * (image_size[0] // 2) * (image_size[1] // 2)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(pooled, 128), nn.ReLU(),
                                  nn.Linear(128, num_classes))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


def default_model(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """``SmallCNN`` for (C, H, W) inputs, ``MLP`` for anything else."""
    if len(input_shape) == 3:
        return SmallCNN(input_shape[0], num_classes, image_size=(input_shape[1], input_shape[2]))
    return MLP(math.prod(input_shape), num_classes)
