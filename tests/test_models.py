"""The built-in architectures: ResNet-18 (CIFAR stem) against its published size and
torchvision's names, PyTorch's MNIST CNN against its size, and --model-arch in the CLI."""

from __future__ import annotations

import json

import pytest
import torch

from neuroplastic.cli import main
from neuroplastic.models import MnistCNN, build_architecture, resnet18


def torchvision_resnet18_keys() -> list[str]:
    """torchvision's resnet18 state-dict names, written out from its structure."""
    def bn(prefix: str) -> list[str]:
        buffers = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
        return [f"{prefix}.{k}" for k in buffers]

    keys = ["conv1.weight", *bn("bn1")]
    for stage in range(1, 5):
        for block in range(2):
            p = f"layer{stage}.{block}"
            keys += [f"{p}.conv1.weight", *bn(f"{p}.bn1"), f"{p}.conv2.weight", *bn(f"{p}.bn2")]
            if stage > 1 and block == 0:
                keys += [f"{p}.downsample.0.weight", *bn(f"{p}.downsample.1")]
    return [*keys, "fc.weight", "fc.bias"]


def test_resnet18_has_the_cifar_stem_the_published_size_and_torchvisions_names():
    model = resnet18(10)
    assert sum(p.numel() for p in model.parameters()) == 11_173_962  # CIFAR ResNet-18, 10 classes
    assert list(model.state_dict()) == torchvision_resnet18_keys()
    assert model.conv1.kernel_size == (3, 3) and model.conv1.stride == (1, 1)
    grey = resnet18(7, in_channels=1)
    assert grey.conv1.in_channels == 1 and grey(torch.randn(2, 1, 28, 28)).shape == (2, 7)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_the_mnist_cnn_is_pytorchs_example():
    model = MnistCNN(1, 10)
    assert sum(p.numel() for p in model.parameters()) == 1_199_882
    assert model(torch.randn(3, 1, 28, 28)).shape == (3, 10)


def test_build_architecture_refuses_what_cannot_work():
    from neuroplastic.errors import NeuroplasticError

    with pytest.raises(NeuroplasticError, match="needs \\(channels, height, width\\) images"):
        build_architecture("cnn", (40,), 10)
    with pytest.raises(NeuroplasticError, match="must be one of mlp, cnn, resnet18"):
        build_architecture("vgg", (1, 28, 28), 10)


def test_model_arch_picks_the_model_of_a_forget_run(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["forget", "--forget-class", "3", "--model-arch", "cnn", "--epochs", "2",
                 "--no-retrain", "--out", str(out)]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["options"]["model_arch"] == "cnn"
    from safetensors.torch import load_file

    weights = load_file(out / "model.safetensors")
    assert weights["features.0.weight"].shape == (32, 1, 3, 3)  # the MNIST CNN's first layer
