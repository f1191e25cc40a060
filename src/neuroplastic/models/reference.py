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


def default_model(input_shape: tuple[int, ...], num_classes: int, *, batch_norm: bool = False) -> nn.Module:
    """``SmallCNN`` for (C, H, W) inputs, ``MLP`` for anything else."""
    if len(input_shape) == 3:
        return SmallCNN(input_shape[0], num_classes, image_size=(input_shape[1], input_shape[2]),
                        batch_norm=batch_norm)
    return MLP(math.prod(input_shape), num_classes, batch_norm=batch_norm)
