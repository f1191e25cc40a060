"""Shared fixtures: a private cache folder, tiny models and a trained digits model."""

from __future__ import annotations

import os
import tempfile

import pytest
import torch
from torch import nn

# Every test process gets its own cache folder, so nothing leaks from a user's cache.
os.environ["NEUROPLASTIC_CACHE_DIR"] = tempfile.mkdtemp(prefix="neuroplastic-test-cache-")
torch.set_num_threads(1)

from neuroplastic.data import digits, full_class, loader  # noqa: E402
from neuroplastic.models import MLP  # noqa: E402
from neuroplastic.training import TrainConfig, fit  # noqa: E402


class TinyNet(nn.Module):
    """Conv + BatchNorm + Linear: exercises eval-mode BN, conv and linear biases."""

    def __init__(self, classes: int = 3) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4 * 4 * 4, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.bn(self.conv(x))).flatten(1))


def tiny_batches(n: int = 22, batch: int = 8, classes: int = 3, seed: int = 0) -> list:
    """(x, y) batches of random 1x4x4 images; the last batch is short."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, 4, 4, generator=gen)
    y = torch.randint(0, classes, (n,), generator=gen)
    return [(x[i:i + batch], y[i:i + batch]) for i in range(0, n, batch)]


@pytest.fixture
def tiny_model() -> TinyNet:
    torch.manual_seed(0)
    model = TinyNet()
    # non-trivial running statistics, so eval-mode BatchNorm matters
    with torch.no_grad():
        model.bn.running_mean.uniform_(-0.5, 0.5)
        model.bn.running_var.uniform_(0.5, 2.0)
    return model


@pytest.fixture(scope="session")
def digits_data():
    return digits()


@pytest.fixture(scope="session")
def trained_mlp(digits_data):
    """An MLP trained on the digits training split with the reference recipe."""
    config = TrainConfig(epochs=20)
    torch.manual_seed(config.seed)
    model = MLP(64, 10, hidden=(128,))
    fit(model, digits_data.train, config)
    return model.eval()


@pytest.fixture(scope="session")
def class3(digits_data):
    """Forgetting request: class 3 of digits, with loaders."""
    scenario = full_class(digits_data, 3)
    return {
        "scenario": scenario,
        "forget": loader(scenario.forget, batch_size=64),
        "retain": loader(scenario.retain, batch_size=64, shuffle=True),
        "full": loader(digits_data.train, batch_size=64),
        "test_retain": loader(scenario.test_retain, batch_size=256),
    }


@pytest.fixture
def built_architectures(monkeypatch: pytest.MonkeyPatch) -> list:
    """``(arch, shape, classes, model class name)`` of every built-in model a command builds
    through ``neuroplastic.models.build_architecture`` (a spy; the models are real)."""
    import neuroplastic.models

    built: list = []
    real = neuroplastic.models.build_architecture

    def spy(arch, shape, classes):  # type: ignore[no-untyped-def]
        model = real(arch, shape, classes)
        built.append((arch, tuple(shape), classes, type(model).__name__))
        return model

    monkeypatch.setattr(neuroplastic.models, "build_architecture", spy)
    return built
