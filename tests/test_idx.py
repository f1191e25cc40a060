"""IDX data sets (MNIST, Fashion-MNIST, KMNIST): the reader on small files the tests write,
gz and plain, malformed ones named in one line, the search order, and the real
Fashion-MNIST files where the Debian package installed them."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch

from neuroplastic.data import load_data
from neuroplastic.data.idx import DEBIAN_FOLDERS, FILES, is_installed, load_idx, read_idx
from neuroplastic.errors import NeuroplasticError


def idx_bytes(array: np.ndarray) -> bytes:
    magic = (0x0800 + array.ndim).to_bytes(4, "big")
    return magic + b"".join(int(d).to_bytes(4, "big") for d in array.shape) + array.astype(np.uint8).tobytes()


def write_set(folder: Path, *, train: int = 120, test: int = 30, gz: bool = True, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    arrays = {"train_images": rng.integers(0, 256, (train, 28, 28)), "train_labels": np.arange(train) % 10,
              "test_images": rng.integers(0, 256, (test, 28, 28)), "test_labels": np.arange(test) % 10}
    folder.mkdir(parents=True, exist_ok=True)
    for key, stem in FILES.items():
        data = idx_bytes(arrays[key])
        if gz:
            (folder / f"{stem}.gz").write_bytes(gzip.compress(data))
        else:
            (folder / stem).write_bytes(data)
    return arrays


@pytest.mark.parametrize("gz", [True, False])
def test_idx_files_are_read_exactly(tmp_path, gz):
    arrays = write_set(tmp_path / "set", gz=gz)
    split = load_data(f"fashion-mnist:{tmp_path / 'set'}", seed=3)
    assert split.input_shape == (1, 28, 28) and split.num_classes == 10
    assert len(split.train) + len(split.val) == 120 and len(split.val) == 10  # 1/12 held out
    assert len(split.test) == 30
    # row numbers are positions in the training file; pixels / 255
    for part in ("train", "val"):
        rows = split.rows[part].numpy()
        x, y = getattr(split, part).tensors
        assert np.array_equal(y.numpy(), arrays["train_labels"][rows])
        pixels = torch.as_tensor(arrays["train_images"][rows] / 255.0, dtype=torch.float32)
        assert torch.allclose(x[:, 0], pixels)
    assert sorted(np.concatenate([split.rows["train"], split.rows["val"]]).tolist()) == list(range(120))
    assert np.bincount(split.val.tensors[1].numpy(), minlength=10).tolist() == [1] * 10  # stratified
    assert torch.equal(split.test.tensors[1], torch.as_tensor(arrays["test_labels"]))
    assert split.class_names[0] == "T-shirt/top"
    again = load_data(f"fashion-mnist:{tmp_path / 'set'}", seed=3)
    assert torch.equal(again.rows["val"], split.rows["val"])  # fixed for a seed


def test_malformed_and_missing_files_are_one_line_naming_them(tmp_path):
    folder = tmp_path / "bad"
    write_set(folder, gz=False)
    stem = folder / FILES["train_labels"]
    data = stem.read_bytes()
    stem.write_bytes(data[:-5])
    with pytest.raises(NeuroplasticError, match="train-labels-idx1-ubyte is truncated"):
        load_data(f"mnist:{folder}")
    stem.write_bytes(b"\x00\x00\x08\x03" + data[4:])
    with pytest.raises(NeuroplasticError, match="magic number 0x00000803, expected 0x00000801"):
        read_idx(stem, dims=1)
    stem.write_bytes(b"\x00\x00")
    with pytest.raises(NeuroplasticError, match="shorter than its header"):
        read_idx(stem, dims=1)
    stem.unlink()
    with pytest.raises(NeuroplasticError, match="has no train-labels-idx1-ubyte"):
        load_data(f"kmnist:{folder}")
    (folder / FILES["test_images"]).write_bytes(gzip.compress(b"x"))  # not gzip-named: raw bytes
    with pytest.raises(NeuroplasticError, match="not a folder"):
        load_idx("mnist", tmp_path / "nowhere")


def test_without_a_folder_the_search_order_and_the_hint(tmp_path, monkeypatch):
    monkeypatch.setenv("NEUROPLASTIC_DATA_DIR", str(tmp_path))
    assert not is_installed("kmnist")
    write_set(tmp_path / "KMNIST" / "raw", train=120, test=10, seed=1)  # torchvision's layout
    assert is_installed("kmnist") and not is_installed("mnist")
    assert len(load_data("kmnist").test) == 10
    write_set(tmp_path / "kmnist", train=120, test=12, seed=2)  # $NEUROPLASTIC_DATA_DIR/<name> first
    assert len(load_data("kmnist").test) == 12
    with pytest.raises(NeuroplasticError, match=r"mnist not found .*put the four official IDX files"):
        load_data("mnist")


@pytest.mark.skipif(not Path(DEBIAN_FOLDERS["fashion-mnist"]).is_dir(),
                    reason="Fashion-MNIST is not installed (make data, or apt-get install "
                           "dataset-fashion-mnist)")
def test_the_real_fashion_mnist_files(monkeypatch):
    monkeypatch.delenv("NEUROPLASTIC_DATA_DIR", raising=False)
    split = load_data("fashion-mnist")
    assert (len(split.train), len(split.val), len(split.test)) == (55000, 5000, 10000)
    counts = np.bincount(split.test.tensors[1].numpy(), minlength=10)
    assert counts.tolist() == [1000] * 10  # the official test set is balanced
    assert float(split.train.tensors[0].max()) == 1.0 and float(split.train.tensors[0].min()) == 0.0


def test_a_stratified_subset_keeps_class_shares_and_file_rows(tmp_path):
    write_set(tmp_path / "set", train=240, test=60, seed=4)
    split = load_data(f"fashion-mnist:{tmp_path / 'set'}", seed=0)
    part = split.stratified_subset(train=110, val=None, test=30, seed=1)
    assert (len(part.train), len(part.val), len(part.test)) == (110, len(split.val), 30)
    full = np.bincount(split.train.tensors[1].numpy(), minlength=10) / len(split.train)
    sub = np.bincount(part.train.tensors[1].numpy(), minlength=10) / len(part.train)
    assert np.abs(full - sub).max() <= 1 / 110 + 1e-9  # each class within one sample of its share
    for kept, row in zip(part.train.tensors[0], part.rows["train"].tolist(), strict=True):
        where = split.locate(row)
        assert where is not None and where[0] == "train"
        assert torch.equal(split.train.tensors[0][where[1]], kept)  # the row map still names the file row
    assert torch.equal(part.train.tensors[0], split.stratified_subset(train=110, seed=1).train.tensors[0])
    with pytest.raises(NeuroplasticError, match="train subset must hold between 10 and"):
        split.stratified_subset(train=5)
