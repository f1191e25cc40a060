"""IDX data sets: MNIST, Fashion-MNIST, KMNIST and anything else in LeCun's IDX format.

A folder holds ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
``t10k-images-idx3-ubyte`` and ``t10k-labels-idx1-ubyte``, each plain or ``.gz``. They are
read with numpy: the magic number (0x0000 0803 for images, 0x0000 0801 for labels: unsigned
bytes, 3 or 1 dimensions), the dimensions and the file length are checked, and a malformed
or truncated file is one :class:`NeuroplasticError` naming it.

The official split is kept: 60,000 training and 10,000 test images. A fixed stratified
validation part (1/12 of the training file, 5,000 images for the 60,000, seeded) is held
out of training. Pixels are divided by 255; each image is (1, 28, 28). Row numbers (for
``--forget-rows``) are positions in the training file (test rows are marked -1).

``fashion-mnist`` without a folder is looked for, in order, under
``$NEUROPLASTIC_DATA_DIR/fashion-mnist``, the Debian package's folder
(``/usr/share/datasets/fashion-mnist``, ``apt-get install dataset-fashion-mnist``), and
torchvision's ``FashionMNIST/raw`` layout under ``$NEUROPLASTIC_DATA_DIR``.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import torch

from neuroplastic.data.splits import DataSplit, as_dataset
from neuroplastic.errors import NeuroplasticError

IDX_SETS = ("fashion-mnist", "mnist", "kmnist")
FILES = {"train_images": "train-images-idx3-ubyte", "train_labels": "train-labels-idx1-ubyte",
         "test_images": "t10k-images-idx3-ubyte", "test_labels": "t10k-labels-idx1-ubyte"}
DEBIAN_FOLDERS = {"fashion-mnist": "/usr/share/datasets/fashion-mnist"}
TORCHVISION_NAMES = {"fashion-mnist": "FashionMNIST", "mnist": "MNIST", "kmnist": "KMNIST"}
VAL_FRACTION = 1 / 12
FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                   "Bag", "Ankle boot"]
HOW_TO_GET = {"fashion-mnist": "install it with `apt-get install dataset-fashion-mnist` (or `make data`), "
                               "or put the four official files in a folder and pass "
                               "--data fashion-mnist:<folder>"}


def _read_bytes(path: Path) -> bytes:
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as handle:
                return handle.read()
        return path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as err:
        raise NeuroplasticError(f"cannot read {path}: {err}") from None


def read_idx(path: str | Path, *, dims: int) -> np.ndarray:
    """The unsigned-byte array of one IDX file with ``dims`` dimensions (3: images, 1: labels).

    Raises:
        NeuroplasticError: naming the file, if its magic number, dimensions or length are wrong.
    """
    path = Path(path)
    raw = _read_bytes(path)
    header = 4 + 4 * dims
    if len(raw) < header:
        raise NeuroplasticError(f"{path} is not an IDX file: {len(raw)} bytes, shorter than its header")
    magic = int.from_bytes(raw[:4], "big")
    expected = 0x0800 + dims
    if magic != expected:
        raise NeuroplasticError(f"{path} is not an IDX file of unsigned bytes with {dims} dimension(s): "
                                f"magic number {magic:#010x}, expected {expected:#010x}")
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(dims))
    size = int(np.prod(shape))
    if len(raw) - header != size:
        state = "truncated" if len(raw) - header < size else "longer than its header says"
        raise NeuroplasticError(f"{path} is {state}: the header says {'x'.join(map(str, shape))} = {size} "
                                f"bytes of data, the file holds {len(raw) - header}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def _file(folder: Path, stem: str) -> Path:
    for candidate in (folder / stem, folder / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    raise NeuroplasticError(f"{folder} has no {stem}[.gz] (an IDX folder holds train-images-idx3-ubyte, "
                            "train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte)")


def idx_folder(name: str) -> Path:
    """Where the IDX files of ``name`` are when no folder is given (see the module docstring).

    Raises:
        NeuroplasticError: saying how to get them, when none of the places holds them.
    """
    root = os.environ.get("NEUROPLASTIC_DATA_DIR")
    candidates = []
    if root:
        candidates.append(Path(root) / name)
    if name in DEBIAN_FOLDERS:
        candidates.append(Path(DEBIAN_FOLDERS[name]))
    if root and name in TORCHVISION_NAMES:
        candidates.append(Path(root) / TORCHVISION_NAMES[name] / "raw")
    for folder in candidates:
        if folder.is_dir() and all((folder / s).is_file() or (folder / f"{s}.gz").is_file()
                                   for s in FILES.values()):
            return folder
    how = HOW_TO_GET.get(name, f"put the four official IDX files in a folder and pass --data {name}:<folder>")
    looked = ", ".join(str(c) for c in candidates) or "nowhere (no $NEUROPLASTIC_DATA_DIR)"
    raise NeuroplasticError(f"{name} not found (looked in {looked}): {how}")


def is_installed(name: str) -> bool:
    """True when :func:`idx_folder` finds the four files of ``name``."""
    try:
        idx_folder(name)
    except NeuroplasticError:
        return False
    return True


def load_idx(name: str, folder: str | Path | None = None, *, seed: int = 0) -> DataSplit:
    """The IDX data set ``name`` (``fashion-mnist``, ``mnist``, ``kmnist``) from ``folder``
    (default: :func:`idx_folder`): the official train / test split, 1/12 of the training
    file held out for validation (stratified, seeded), pixels / 255, shape (1, 28, 28)."""
    from sklearn.model_selection import train_test_split

    where = Path(folder) if folder is not None else idx_folder(name)
    if not where.is_dir():
        raise NeuroplasticError(f"--data {name}:{where}: not a folder")
    arrays = {key: read_idx(_file(where, stem), dims=3 if key.endswith("images") else 1)
              for key, stem in FILES.items()}
    for part in ("train", "test"):
        images, labels = arrays[f"{part}_images"], arrays[f"{part}_labels"]
        if len(images) != len(labels):
            raise NeuroplasticError(f"{where}: {len(images)} {part} images but {len(labels)} labels")
    x = arrays["train_images"].astype(np.float32)[:, None] / 255.0
    y = arrays["train_labels"].astype(np.int64)
    try:
        train_idx, val_idx = train_test_split(np.arange(len(y)), test_size=VAL_FRACTION, random_state=seed,
                                              stratify=y)
    except ValueError as err:
        raise NeuroplasticError(f"{where}: cannot split off a validation set: {err}") from None
    train_idx, val_idx = np.sort(train_idx), np.sort(val_idx)
    test = as_dataset(arrays["test_images"].astype(np.float32)[:, None] / 255.0,
                      arrays["test_labels"].astype(np.int64), name=f"{where} (test)")
    classes = int(max(y.max(), int(test.tensors[1].max()))) + 1
    split = DataSplit(name=name, train=as_dataset(x[train_idx], y[train_idx], name=name),
                      val=as_dataset(x[val_idx], y[val_idx], name=name), test=test, num_classes=classes,
                      rows={"train": torch.as_tensor(train_idx), "val": torch.as_tensor(val_idx),
                            "test": torch.full((len(test),), -1, dtype=torch.long)})
    split.class_names = FASHION_CLASSES if name == "fashion-mnist" and classes == 10 else \
        [str(i) for i in range(classes)]
    return split
