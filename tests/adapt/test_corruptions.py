"""Corruptions: hand-computable ones against their formulas, the rest for determinism,
severity order and shape; CIFAR-10-C files read back."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from neuroplastic.data import digits
from neuroplastic.data.corruptions import (
    FLAT_CORRUPTIONS,
    IMAGE_CORRUPTIONS,
    PARAMETERS,
    corrupt,
    load_cifar10c,
    parse_spec,
)
from neuroplastic.errors import NeuroplasticError


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return digits().test.tensors[0][:48]


@pytest.mark.parametrize("name", IMAGE_CORRUPTIONS)
def test_every_corruption_is_seeded_shaped_and_bounded(images, name) -> None:
    a, b = corrupt(images, name, 3, seed=1), corrupt(images, name, 3, seed=1)
    assert torch.equal(a, b) and a.shape == images.shape and a.dtype == images.dtype
    assert a.min() >= 0 and a.max() <= 1
    assert not torch.equal(a, images)
    if name in ("gaussian_noise", "shot_noise", "impulse_noise", "motion_blur", "elastic", "fog"):
        assert not torch.equal(a, corrupt(images, name, 3, seed=2))  # random draws follow the seed


@pytest.mark.parametrize("name", ["gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "contrast",
                                  "brightness", "jpeg_compression", "fog"])
def test_severity_five_changes_more_than_severity_one(images, name) -> None:
    change = [float((corrupt(images, name, s, seed=0) - images).abs().mean()) for s in (1, 5)]
    assert change[1] > change[0]


def test_noise_contrast_and_brightness_follow_their_formulas() -> None:
    grey = torch.full((4, 1, 16, 16), 0.5)
    noisy = corrupt(grey, "gaussian_noise", 5, seed=0)
    assert abs(float((noisy - grey).std()) - PARAMETERS["gaussian_noise"][4]) < 0.01
    hit = float((corrupt(grey, "impulse_noise", 5, seed=0) != grey).float().mean())
    assert abs(hit - PARAMETERS["impulse_noise"][4]) < 0.015
    x = torch.rand(3, 2, 5, 5) * 0.5 + 0.25
    c = PARAMETERS["contrast"][2]
    means = x.mean(dim=(2, 3), keepdim=True)
    torch.testing.assert_close(corrupt(x, "contrast", 3), (x - means) * c + means)
    torch.testing.assert_close(corrupt(x[:, :1], "brightness", 2), (x[:, :1] + 0.1).clamp(0, 1))
    rgb = torch.tensor([0.2, 0.4, 0.5]).view(1, 3, 1, 1)
    torch.testing.assert_close(corrupt(rgb, "brightness", 1), rgb * 0.55 / 0.5)  # V + 0.05, H and S kept


def test_blur_keeps_a_flat_image_flat_and_smooths_an_edge() -> None:
    flat = torch.full((1, 1, 9, 9), 0.3)
    torch.testing.assert_close(corrupt(flat, "defocus_blur", 5), flat)
    edge = torch.zeros(1, 1, 9, 9)
    edge[..., 4:] = 1.0
    blurred = corrupt(edge, "defocus_blur", 5)
    assert 0 < float(blurred[0, 0, 4, 3]) < 1 and float((blurred - edge).abs().sum()) > 0


def test_flat_vectors_take_their_subset_with_bounds() -> None:
    x = torch.rand(20, 40) * 4 - 2
    for name in FLAT_CORRUPTIONS:
        out = corrupt(x, name, 4, bounds=(-2.0, 2.0))
        assert out.shape == x.shape and out.min() >= -2 and out.max() <= 2
    with pytest.raises(NeuroplasticError, match="unknown corruption 'defocus_blur' for flat vectors"):
        corrupt(x, "defocus_blur", 1)


def test_bad_specs_are_named() -> None:
    assert len(parse_spec("all")) == 5 * len(IMAGE_CORRUPTIONS)
    assert parse_spec("fog:2") == [("fog", 2)] and len(parse_spec("fog")) == 5
    with pytest.raises(NeuroplasticError, match="unknown corruption 'snow'"):
        parse_spec("snow:2")
    with pytest.raises(NeuroplasticError, match="severity must be 1-5"):
        parse_spec("fog:6")
    with pytest.raises(NeuroplasticError, match="severity must be 1-5"):
        corrupt(torch.rand(2, 1, 4, 4), "fog", 0)


def test_cifar10c_files_are_read_per_severity(tmp_path) -> None:
    rng = np.random.default_rng(0)
    data = rng.integers(0, 256, (5 * 4, 32, 32, 3), dtype=np.uint8)
    labels = np.arange(20) % 10
    np.save(tmp_path / "fog.npy", data)
    np.save(tmp_path / "labels.npy", labels)
    part = load_cifar10c(tmp_path, "fog", 3)
    x, y = part.tensors
    assert x.shape == (4, 3, 32, 32) and torch.equal(y, torch.from_numpy(labels[8:12]))
    torch.testing.assert_close(x, torch.from_numpy(data[8:12]).permute(0, 3, 1, 2).float() / 255)
    with pytest.raises(NeuroplasticError, match=r"snow\.npy not found"):
        load_cifar10c(tmp_path, "snow", 1)


def test_an_adapter_worse_than_the_source_is_named_once_even_when_it_is_norm():
    from neuroplastic.adapt.runner import CorruptionResult

    result = CorruptionResult(method="norm")
    result.errors = {"source": {("noise", 1): 0.2}, "norm": {("noise", 1): 0.3}}
    result.clean_acc_batch_stats = result.clean_acc_after = 0.9
    assert result.warnings == ["norm has a higher mean error than the unadapted model (0.300 vs 0.200)"]
    result.method = "tent"
    result.errors["tent"] = {("noise", 1): 0.25}
    assert [w.split()[0] for w in result.warnings] == ["norm", "tent"]
