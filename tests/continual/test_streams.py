"""The named IDX streams (split-, permuted-, rotated-<fashion-mnist|mnist|kmnist>[:<folder>]) on
small IDX files the tests write, the rotation against a slow reference, and the CLI."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from neuroplastic.cli import main
from neuroplastic.data import load_data
from neuroplastic.data.idx import is_installed
from neuroplastic.data.streams import load_stream, rotate_images
from neuroplastic.errors import NeuroplasticError
from tests.test_idx import write_set


def reference_rotation(image: np.ndarray, degrees: float) -> np.ndarray:
    """One pixel at a time: each output pixel centre turned back by ``degrees`` about the
    image centre (y pointing down, so counter-clockwise on screen), read from the input by
    bilinear interpolation with zeros outside."""
    size = image.shape[0]
    centre = (size - 1) / 2
    angle = math.radians(degrees)
    out = np.zeros_like(image)

    def pixel(r: int, c: int) -> float:
        return float(image[r, c]) if 0 <= r < size and 0 <= c < size else 0.0

    for row in range(size):
        for col in range(size):
            x, y = col - centre, row - centre
            src_x = math.cos(angle) * x - math.sin(angle) * y + centre
            src_y = math.sin(angle) * x + math.cos(angle) * y + centre
            c0, r0 = math.floor(src_x), math.floor(src_y)
            fc, fr = src_x - c0, src_y - r0
            out[row, col] = ((1 - fr) * ((1 - fc) * pixel(r0, c0) + fc * pixel(r0, c0 + 1))
                             + fr * ((1 - fc) * pixel(r0 + 1, c0) + fc * pixel(r0 + 1, c0 + 1)))
    return out


@pytest.mark.parametrize("degrees", [30.0, 90.0, 162.0])
def test_rotation_equals_the_pixel_by_pixel_reference(degrees):
    image = torch.rand(1, 1, 9, 9, dtype=torch.float64)
    turned = rotate_images(image, degrees)[0, 0].numpy()
    assert np.allclose(turned, reference_rotation(image[0, 0].numpy(), degrees), atol=1e-12)


def test_a_quarter_turn_is_counter_clockwise_and_exact():
    image = torch.rand(3, 1, 28, 28)
    quarter = torch.rot90(image, 1, dims=(2, 3))
    assert torch.allclose(rotate_images(image, 90.0), quarter, atol=1e-5)  # the grid is float32
    assert rotate_images(image, 0.0) is image


def test_permuted_idx_stream_is_ten_permutations_of_the_files(tmp_path):
    write_set(tmp_path / "set", train=240, test=60)
    base = load_data(f"fashion-mnist:{tmp_path / 'set'}", seed=2)
    stream = load_stream(f"permuted-fashion-mnist:{tmp_path / 'set'}", seed=2)
    assert (len(stream), stream.setting, stream.num_outputs) == (10, "domain", 10)
    assert stream.input_shape == (1, 28, 28)
    assert torch.equal(stream[0].train.tensors[0], base.train.tensors[0])  # task 0 unpermuted
    orders = set()
    for experience in stream:
        x = experience.train.tensors[0].reshape(len(base.train), -1)
        original = base.train.tensors[0].reshape(len(base.train), -1)
        assert torch.equal(experience.train.tensors[1], base.train.tensors[1])  # domain-IL: same labels
        assert torch.equal(x.sort(1).values, original.sort(1).values)  # the same pixels, moved
        orders.add(tuple(x[0].tolist()))
    assert len(orders) == 10  # ten different orders
    task_il = load_stream(f"permuted-fashion-mnist:{tmp_path / 'set'}", tasks=3, setting="task", seed=2)
    assert len(task_il) == 3 and task_il.num_outputs == 30 and task_il[2].classes == tuple(range(20, 30))


def test_rotated_and_split_idx_streams(tmp_path):
    write_set(tmp_path / "set", train=240, test=60)
    base = load_data(f"mnist:{tmp_path / 'set'}", seed=0)
    rotated = load_stream(f"rotated-mnist:{tmp_path / 'set'}")
    assert len(rotated) == 10 and rotated.setting == "domain" and rotated.name == "rotated-mnist"
    for t in (0, 3, 9):
        assert torch.equal(rotated[t].test.tensors[0], rotate_images(base.test.tensors[0], 18.0 * t))
    assert not torch.allclose(rotated[1].test.tensors[0], base.test.tensors[0])
    split = load_stream(f"split-kmnist:{tmp_path / 'set'}")
    assert len(split) == 5 and split.setting == "task" and split.num_outputs == 10
    assert [e.classes for e in split] == [(0, 1), (2, 3), (4, 5), (6, 7), (8, 9)]
    for experience in split:
        assert set(experience.train.tensors[1].tolist()) == set(experience.classes)
    assert load_stream(f"split-kmnist:{tmp_path / 'set'}", setting="class").setting == "class"


@pytest.mark.parametrize(("name", "message"), [
    ("rotated-digits", "rotated streams need 28x28 images"),
    ("permuted-digits:/somewhere", "takes no folder"),
    ("shuffled-fashion-mnist", "unknown scenario"),
    ("split-cifar", "unknown scenario"),
])
def test_bad_stream_names_are_one_clear_error(name, message):
    with pytest.raises(NeuroplasticError, match=message):
        load_stream(name)


def test_a_missing_idx_folder_says_how_to_get_the_files(tmp_path, monkeypatch):
    monkeypatch.setenv("NEUROPLASTIC_DATA_DIR", str(tmp_path))
    with pytest.raises(NeuroplasticError, match=r"mnist not found.*pass --scenario permuted-mnist:<folder>$"):
        load_stream("permuted-mnist")
    with pytest.raises(NeuroplasticError, match=r"^--scenario split-fashion-mnist:\S*nothing: not a folder$"):
        load_stream(f"split-fashion-mnist:{tmp_path / 'nothing'}")


def test_the_cli_runs_a_rotated_idx_stream(tmp_path, capsys):
    write_set(tmp_path / "set", train=240, test=60)
    out = tmp_path / "run"
    scenario = f"rotated-fashion-mnist:{tmp_path / 'set'}"
    assert main(["continual", "--method", "finetune", "--scenario", scenario,
                 "--tasks", "3", "--epochs", "1", "--hidden", "16", "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["scenario"] == "rotated-fashion-mnist" and metrics["tasks"] == 3.0
    assert metrics["setting"] == "domain"
    assert main(["continual", "--scenario", f"split-fashion-mnist:{tmp_path / 'set'}", "--tasks", "3",
                 "--out", str(tmp_path / "bad")]) == 2
    assert "--tasks applies to permuted and rotated scenarios" in capsys.readouterr().err


@pytest.mark.skipif(not is_installed("fashion-mnist"),
                    reason="Fashion-MNIST is not installed (make data, or apt-get install "
                           "dataset-fashion-mnist)")
def test_the_real_permuted_fashion_mnist_stream(monkeypatch):
    monkeypatch.delenv("NEUROPLASTIC_DATA_DIR", raising=False)
    stream = load_stream("permuted-fashion-mnist", tasks=2)
    assert [len(e.train) for e in stream] == [55000, 55000] and len(stream[1].test) == 10000
    assert stream[1].classes == tuple(range(10))


def test_learn_reads_idx_data_too(tmp_path):
    """`neuroplastic learn --data fashion-mnist:<folder>` trains on the IDX files (784 inputs)."""
    write_set(tmp_path / "set", train=240, test=60)
    out = tmp_path / "run"
    assert main(["learn", "--rule", "disinhibitory", "--data", f"fashion-mnist:{tmp_path / 'set'}",
                 "--hidden", "8", "--epochs", "1", "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["data"] == "fashion-mnist" and 0.0 <= metrics["test_acc"] <= 1.0
    config = json.loads((out / "config.json").read_text())
    assert config["options"]["data"].endswith("set")
