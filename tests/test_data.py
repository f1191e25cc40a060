"""Loaders for real formats (on small files written here) and forgetting scenarios."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from neuroplastic import NeuroplasticError
from neuroplastic.data import (
    add_trigger,
    corrective,
    digits,
    full_class,
    given_rows,
    load_cifar10_binary,
    load_csv,
    load_data,
    load_image_folder,
    load_npz,
    load_torchvision,
    random_samples,
    sub_class,
)


def test_digits_default_split_is_fixed_and_disjoint():
    a, b = digits(), digits()
    assert (len(a.train), len(a.val), len(a.test)) == (1257, 180, 360)
    assert torch.equal(a.train.tensors[0], b.train.tensors[0])
    assert a.input_shape == (1, 8, 8) and a.num_classes == 10
    assert float(a.train.tensors[0].max()) == 1.0


def test_npz_round_trip_with_and_without_test_split(tmp_path):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(60, 3, 5, 5)).astype("float32"), np.repeat(np.arange(3), 20)
    np.savez(tmp_path / "a.npz", x=x, y=y)
    split = load_npz(tmp_path / "a.npz")
    assert len(split.train) + len(split.val) + len(split.test) == 60
    assert split.input_shape == (3, 5, 5) and split.num_classes == 3
    got = torch.cat([split.train.tensors[0], split.val.tensors[0], split.test.tensors[0]])
    assert sorted(got.sum((1, 2, 3)).tolist()) == pytest.approx(sorted(x.sum((1, 2, 3)).tolist()), abs=1e-5)
    np.savez(tmp_path / "b.npz", x=x, y=y, x_test=x[:9], y_test=y[:9])
    own = load_npz(tmp_path / "b.npz")
    assert torch.equal(own.test.tensors[0], torch.from_numpy(x[:9]))
    assert len(own.train) + len(own.val) == 60


def test_csv_with_label_column(tmp_path):
    rows = ["f1,label,f2"] + [f"{i},{i % 2},{2 * i}" for i in range(40)]
    (tmp_path / "d.csv").write_text("\n".join(rows))
    split = load_csv(tmp_path / "d.csv")
    x = torch.cat([split.train.tensors[0], split.val.tensors[0], split.test.tensors[0]])
    y = torch.cat([split.train.tensors[1], split.val.tensors[1], split.test.tensors[1]])
    assert x.shape == (40, 2)
    assert torch.equal(y, (x[:, 0] % 2).long())  # the label column was found by name
    assert torch.equal(x[:, 1], 2 * x[:, 0])


def test_image_folder(tmp_path):
    for label, name in enumerate(["cat", "dog"]):
        (tmp_path / name).mkdir()
        for i in range(10):
            value = 40 + 150 * label
            Image.new("L", (6, 4), color=value + i).save(tmp_path / name / f"{i}.png")
    (tmp_path / "dog" / "notes.txt").write_text("ignored")
    split = load_image_folder(tmp_path, grayscale=True)
    assert split.class_names == ["cat", "dog"] and split.input_shape == (1, 4, 6)
    x = torch.cat([split.train.tensors[0], split.val.tensors[0], split.test.tensors[0]])
    y = torch.cat([split.train.tensors[1], split.val.tensors[1], split.test.tensors[1]])
    assert torch.equal((x.mean((1, 2, 3)) > 0.5).long(), y)  # dogs are the bright ones


def test_torchvision_loader_reads_files_on_disk(tmp_path):
    pytest.importorskip("torchvision")
    import pickle

    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        with open(folder / name, "wb") as handle:  # CIFAR-10's own on-disk format
            pickle.dump({"data": rng.integers(0, 255, (10, 3072), dtype=np.uint8),
                         "labels": [i % 10 for i in range(10)]}, handle)
    with open(folder / "batches.meta", "wb") as handle:
        pickle.dump({"label_names": [str(i) for i in range(10)]}, handle)
    from torchvision.datasets import CIFAR10

    CIFAR10._check_integrity = lambda self: True  # our small files have other checksums
    split = load_torchvision("CIFAR10", tmp_path)
    assert split.input_shape == (3, 32, 32) and len(split.test) == 10


def write_cifar10_binary(folder, *, per_batch: int = 20) -> dict[str, np.ndarray]:
    """Small files in CIFAR-10's binary format; returns what was written, for the oracle."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    written = {}
    for name in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
        records = rng.integers(0, 256, (per_batch, 3073), dtype=np.uint8)
        records[:, 0] = np.arange(per_batch) % 10  # every class in every batch
        records.tofile(folder / name)
        written[name] = records
    (folder / "batches.meta.txt").write_text("\n".join(f"class{i}" for i in range(10)) + "\n\n")
    return written


def test_cifar10_binary_batches_are_read_without_torchvision(tmp_path):
    written = write_cifar10_binary(tmp_path / "cifar-10-batches-bin")
    split = load_data(str(tmp_path))  # the parent folder, as the archive unpacks
    assert split.input_shape == (3, 32, 32) and split.num_classes == 10
    assert split.class_names == [f"class{i}" for i in range(10)]
    assert len(split.train) + len(split.val) == 100 and len(split.test) == 20
    # oracle: record r of test_batch.bin is label byte, then R, G, B planes row by row
    record = written["test_batch.bin"][3]
    x, y = split.test.tensors[0][3], split.test.tensors[1][3]
    assert int(y) == int(record[0])
    assert float(x[1, 2, 5]) == pytest.approx(record[1 + 1024 + 2 * 32 + 5] / 255)
    assert float(x[2, 31, 31]) == pytest.approx(record[3072] / 255)


def test_cifar10_binary_bad_files(tmp_path):
    folder = tmp_path / "cifar-10-batches-bin"
    write_cifar10_binary(folder)
    (folder / "test_batch.bin").write_bytes(b"\x00" * 100)
    with pytest.raises(NeuroplasticError, match="not a CIFAR-10 binary batch"):
        load_cifar10_binary(folder)
    (folder / "test_batch.bin").unlink()
    with pytest.raises(NeuroplasticError, match="cannot read CIFAR-10 batch"):
        load_cifar10_binary(folder)
    with pytest.raises(NeuroplasticError, match="no CIFAR-10 binary batches"):
        load_cifar10_binary(tmp_path / "elsewhere")


def test_bad_data_files_give_one_line_errors(tmp_path):
    (tmp_path / "bad.npz").write_text("not a zip")
    (tmp_path / "bad.csv").write_text("a,b\n1,x\n")
    (tmp_path / "data.json").write_text("{}")
    np.savez(tmp_path / "nokey.npz", inputs=np.zeros((3, 2)))
    np.savez(tmp_path / "mismatch.npz", x=np.zeros((3, 2)), y=np.zeros(4))
    cases = {"bad.npz": "not an NPZ archive", "bad.csv": "non-numeric", "data.json": "unknown data format",
             "nokey.npz": "no array 'x'", "mismatch.npz": "3 inputs but 4 labels",
             "missing.npz": "not found"}
    for name, message in cases.items():
        with pytest.raises(NeuroplasticError, match=message) as info:
            load_data(str(tmp_path / name))
        assert "\n" not in str(info.value)
    if not _has_torchvision():
        with pytest.raises(NeuroplasticError, match="torchvision is not installed"):
            load_torchvision("CIFAR10", tmp_path)


def _has_torchvision() -> bool:
    try:
        import torchvision  # noqa: F401
    except ImportError:
        return False
    return True


def test_full_class_and_indices_scenarios():
    data = digits()
    scenario = full_class(data, 4)
    assert (scenario.forget.tensors[1] == 4).all() and (scenario.retain.tensors[1] != 4).all()
    assert len(scenario.forget) + len(scenario.retain) == len(data.train)
    assert (scenario.test_retain.tensors[1] != 4).all()
    with pytest.raises(NeuroplasticError, match="not among the labels"):
        full_class(data, 42)
    train_rows = data.rows["train"]
    rows = [int(train_rows[5]), int(train_rows[1]), int(train_rows[5])]
    picked = given_rows(data, rows)
    assert picked.forget_idx.tolist() == [1, 5] and len(picked.retain) == len(data.train) - 2
    assert sorted(picked.forget_rows) == sorted(set(rows))
    with pytest.raises(NeuroplasticError, match="row 99999 is not in the data"):
        given_rows(data, [0, 99999])
    with pytest.raises(NeuroplasticError, match="empty"):
        given_rows(data, [])


def test_random_and_subclass_scenarios():
    data = digits()
    rnd = random_samples(data, fraction=0.1, seed=3)
    assert len(rnd.forget) == round(0.1 * len(data.train))
    assert random_samples(data, fraction=0.1, seed=3).forget_idx.tolist() == rnd.forget_idx.tolist()
    sub = sub_class(data, 8, coarse_of={d: d % 2 for d in range(10)}, coarse_names=["even", "odd"])
    fine = data.train.tensors[1]
    assert sub.data.num_classes == 2
    assert torch.equal(sub.data.train.tensors[1], fine % 2)
    assert torch.equal(sub.forget_idx, (fine == 8).nonzero().flatten())
    assert (sub.forget.tensors[1] == 0).all()  # 8 is even


def test_corrective_scenario_poisons_and_identifies_a_part():
    data = digits()
    sc = corrective(data, target=0, poison_fraction=0.1, identified_fraction=0.5, seed=1)
    n_poison = round(0.1 * len(data.train))
    assert len(sc.poisoned_idx) == n_poison and len(sc.forget) == round(0.5 * n_poison)
    assert set(sc.forget_idx.tolist()) <= set(sc.poisoned_idx.tolist())
    x_clean, y_clean = data.train.tensors
    x_p, y_p = sc.data.train.tensors
    assert (y_clean[sc.poisoned_idx] != 0).all() and (y_p[sc.poisoned_idx] == 0).all()
    assert (x_p[sc.poisoned_idx][..., -2:, -2:] == 1.0).all()
    untouched = torch.ones(len(y_p), dtype=torch.bool)
    untouched[sc.poisoned_idx] = False
    assert torch.equal(x_p[untouched], x_clean[untouched])
    assert (sc.attack_test.tensors[1] == 0).all()
    assert torch.equal(add_trigger(torch.zeros(1, 1, 3, 3), value=1.0)[0, 0],
                       torch.tensor([[0.0, 0, 0], [0, 1, 1], [0, 1, 1]]))
