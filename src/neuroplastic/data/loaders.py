"""Loaders for real data formats: NPZ, CSV, image folders, CIFAR-10 binary batches,
torchvision datasets.

Every loader returns a :class:`DataSplit`; a file that has its own test split
keeps it, otherwise a fixed stratified split is made.
"""

from __future__ import annotations

import csv
import zipfile
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import TensorDataset

from neuroplastic.data.digits import digits
from neuroplastic.data.idx import IDX_SETS, load_idx
from neuroplastic.data.mnist1d import mnist1d
from neuroplastic.data.splits import DataSplit, as_dataset, check_labels, split_dataset
from neuroplastic.errors import NeuroplasticError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


def load_npz(path: str | Path, *, x_key: str = "x", y_key: str = "y", seed: int = 0) -> DataSplit:
    """Arrays ``x`` (N, ...) and ``y`` (N,) from an ``.npz``; ``x_test``/``y_test`` if present
    are used as the test split (then 1/8 of the rest is held out for validation)."""
    path = Path(path)
    if path.is_file() and not zipfile.is_zipfile(path):
        raise NeuroplasticError(f"{path} is not an NPZ archive (not a zip file; save with numpy.savez)")
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {k: archive[k] for k in archive.files}
    except (OSError, ValueError, zipfile.BadZipFile) as err:
        raise NeuroplasticError(f"cannot read NPZ file {path}: {err}") from None
    for key in (x_key, y_key):
        if key not in arrays:
            raise NeuroplasticError(f"NPZ file {path} has no array {key!r} (has {sorted(arrays)})")
    x, y = arrays[x_key], arrays[y_key]
    as_dataset(x, y, name=str(path))  # shape and label checks with a clear message
    if "x_test" in arrays and "y_test" in arrays:
        test = as_dataset(arrays["x_test"], arrays["y_test"], name=f"{path} (test)")
        return _with_own_test(path.stem, x, y, test, seed=seed)
    return split_dataset(path.stem, x, y, seed=seed)


def _with_own_test(name: str, x: np.ndarray, y: np.ndarray, test: TensorDataset, *,
                   seed: int) -> DataSplit:
    """Split (x, y) into train and a 1/9 validation part; ``test`` is the given test split."""
    train_idx, val_idx = _stratified_halves(y, val_fraction=1 / 9, seed=seed, name=name)
    split = DataSplit(name=name, train=as_dataset(x[train_idx], y[train_idx], name=name),
                      val=as_dataset(x[val_idx], y[val_idx], name=name), test=test,
                      num_classes=int(max(y.max(), test.tensors[1].max())) + 1,
                      rows={"train": torch.as_tensor(train_idx), "val": torch.as_tensor(val_idx),
                            "test": torch.full((len(test),), -1, dtype=torch.long)})
    if tuple(test.tensors[0].shape[1:]) != split.input_shape:
        raise NeuroplasticError(f"{name}: the test inputs have another shape than the training inputs")
    split.class_names = [str(i) for i in range(split.num_classes)]
    return split


def _stratified_halves(y: np.ndarray, *, val_fraction: float, seed: int,
                       name: str) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.model_selection import train_test_split

    try:
        return train_test_split(np.arange(len(y)), test_size=val_fraction, random_state=seed,
                                stratify=y)
    except ValueError as err:
        raise NeuroplasticError(f"{name}: cannot split off a validation set: {err}") from None


def load_csv(path: str | Path, *, label_column: str | int = "label", id_column: str | None = None,
             seed: int = 0) -> DataSplit:
    """A CSV with a header row; the ``label_column`` (name or index, default ``label``, else
    the last column) holds integer labels 0..K-1, the optional ``id_column`` names each
    record (any text; kept in ``row_ids``, not a feature), and every other column is a
    numeric feature, given to the model as a float32 vector in file order, unscaled.
    Data rows are numbered from 0 in file order (header and blank lines not counted).

    A UTF-8 byte-order mark and blank lines are ignored; a row with another number of
    values than the header, or a non-numeric value, is reported by its line number.
    """
    path = Path(path)
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            lines = [(number, row) for number, row in enumerate(csv.reader(handle), start=1)
                     if any(cell.strip() for cell in row)]
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise NeuroplasticError(f"cannot read CSV file {path}: {err}") from None
    if len(lines) < 2:
        raise NeuroplasticError(f"CSV file {path} needs a header row and at least one data row")
    header = [cell.strip() for cell in lines[0][1]]
    id_col = None
    if id_column is not None:
        if id_column not in header:
            raise NeuroplasticError(f"CSV file {path} has no column {id_column!r} (columns: "
                                    f"{', '.join(header[:8])})")
        id_col = header.index(id_column)
    if isinstance(label_column, int):
        col = label_column
    elif label_column in header:
        col = header.index(label_column)
    else:
        col = len(header) - 1 if id_col != len(header) - 1 else len(header) - 2
    if col == id_col:
        raise NeuroplasticError(f"CSV file {path}: the label and id columns are the same column")
    rows, numbers, ids = [], [], []
    for number, row in lines[1:]:
        if len(row) != len(header):
            raise NeuroplasticError(f"CSV file {path}, line {number}: {len(row)} values, but the header "
                                    f"has {len(header)} columns")
        if id_col is not None:
            ids.append(row[id_col].strip())
            row = row[:id_col] + row[id_col + 1:]
        try:
            rows.append([float(v) for v in row])
        except ValueError:
            bad = next(v for v in row if not _is_number(v))
            raise NeuroplasticError(f"CSV file {path}, line {number}: non-numeric value {bad[:30]!r}") \
                from None
        numbers.append(number)
    table = np.array(rows, dtype=np.float64)
    if id_col is not None and id_col < col:
        col -= 1  # the id column was taken out of each row
    y = check_labels(table[:, col], name=f"CSV file {path}", rows=numbers, row_word="line")
    x = np.delete(table, col, axis=1).astype(np.float32)
    split = split_dataset(path.stem, x, y, seed=seed)
    split.row_ids = ids if id_col is not None else None
    return split


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def load_image_folder(root: str | Path, *, size: tuple[int, int] | None = None,
                      grayscale: bool = False, seed: int = 0) -> DataSplit:
    """``root/<class name>/<image>`` (torchvision ``ImageFolder`` layout), classes sorted by
    name; images resized to ``size`` (default: the first image's size), scaled to [0, 1]."""
    from PIL import Image, UnidentifiedImageError

    root = Path(root)
    classes = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    if not classes:
        raise NeuroplasticError(f"image folder {root} has no class sub-folders")
    images, labels = [], []
    mode = "L" if grayscale else "RGB"
    for label, name in enumerate(classes):
        for file in sorted((root / name).iterdir()):
            if file.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            try:
                with Image.open(file) as img:
                    img = img.convert(mode)
                    size = size or (img.height, img.width)
                    img = img.resize((size[1], size[0]))
                    arr = np.asarray(img, dtype=np.float32) / 255.0
            except (OSError, UnidentifiedImageError) as err:
                raise NeuroplasticError(f"cannot read image {file}: {err}") from None
            images.append(arr[None] if grayscale else arr.transpose(2, 0, 1))
            labels.append(label)
    if not images:
        raise NeuroplasticError(f"image folder {root} contains no images")
    return split_dataset(root.name, np.stack(images), np.array(labels), seed=seed,
                         class_names=classes)


def load_torchvision(name: str, root: str | Path, *, seed: int = 0) -> DataSplit:
    """A torchvision classification dataset already on disk (never downloads), e.g.
    ``CIFAR10``; its own train/test splits are kept, 10% of train held out for validation."""
    try:
        import torchvision.datasets as tvd
    except ImportError:
        raise NeuroplasticError(
            "torchvision is not installed; install the 'vision' extra"
        ) from None
    cls = getattr(tvd, name, None)
    if cls is None:
        raise NeuroplasticError(f"torchvision has no dataset {name!r}")
    try:
        train = cls(root=str(root), train=True, download=False)
        test = cls(root=str(root), train=False, download=False)
    except (RuntimeError, OSError) as err:
        raise NeuroplasticError(f"cannot load {name} from {root}: {err}") from None

    def arrays(ds: object) -> tuple[np.ndarray, np.ndarray]:
        x = np.asarray(ds.data, dtype=np.float32)  # type: ignore[attr-defined]
        x = x / 255.0 if x.max() > 1 else x
        x = x[:, None] if x.ndim == 3 else x.transpose(0, 3, 1, 2)
        return x, np.asarray(ds.targets)  # type: ignore[attr-defined]

    x, y = arrays(train)
    x_test, y_test = arrays(test)
    inner = _with_own_test(name, x, y, as_dataset(x_test, y_test, name=f"{name} (test)"),
                           seed=seed)
    classes = getattr(train, "classes", None)
    if classes:
        inner.class_names = list(classes)
    return inner


#: The folder CIFAR-10's binary archive (cifar-10-binary.tar.gz) unpacks to.
CIFAR10_BINARY = "cifar-10-batches-bin"
CIFAR10_RECORD = 1 + 3 * 32 * 32  # a label byte, then the red, green and blue 32x32 planes


def _cifar10_folder(path: Path) -> Path | None:
    for folder in (path, path / CIFAR10_BINARY):
        if (folder / "data_batch_1.bin").is_file():
            return folder
    return None


def load_cifar10_binary(root: str | Path, *, seed: int = 0) -> DataSplit:
    """CIFAR-10 in its binary on-disk format (``data_batch_1.bin`` .. ``data_batch_5.bin``,
    ``test_batch.bin``; ``root`` is that folder or the one holding ``cifar-10-batches-bin``),
    read with numpy: no torchvision, no pickle. Pixels scaled to [0, 1], shape (3, 32, 32);
    the own test split is kept and 1/9 of train is held out for validation; class names
    from ``batches.meta.txt`` when present."""
    folder = _cifar10_folder(Path(root))
    if folder is None:
        raise NeuroplasticError(f"{root} holds no CIFAR-10 binary batches (data_batch_1.bin)")

    def read(names: list[str]) -> tuple[np.ndarray, np.ndarray]:
        records = []
        for name in names:
            try:
                raw = np.fromfile(folder / name, dtype=np.uint8)
            except OSError as err:
                raise NeuroplasticError(f"cannot read CIFAR-10 batch {folder / name}: "
                                        f"{err.strerror or err}") from None
            if raw.size == 0 or raw.size % CIFAR10_RECORD:
                raise NeuroplasticError(f"{folder / name} is not a CIFAR-10 binary batch "
                                        f"({raw.size} bytes, not records of {CIFAR10_RECORD})")
            records.append(raw.reshape(-1, CIFAR10_RECORD))
        data = np.concatenate(records)
        labels = data[:, 0].astype(np.int64)
        if labels.max() > 9:
            raise NeuroplasticError(f"{folder}: label {labels.max()} in a CIFAR-10 batch")
        return data[:, 1:].reshape(-1, 3, 32, 32).astype(np.float32) / 255.0, labels

    x, y = read([f"data_batch_{i}.bin" for i in range(1, 6)])
    x_test, y_test = read(["test_batch.bin"])
    split = _with_own_test("cifar10", x, y, as_dataset(x_test, y_test, name="cifar10 (test)"),
                           seed=seed)
    meta = folder / "batches.meta.txt"
    names = [line.strip() for line in meta.read_text().splitlines() if line.strip()] \
        if meta.is_file() else []
    if len(names) == split.num_classes:
        split.class_names = names
    return split


def load_data(spec: str, *, seed: int = 0, id_column: str | None = None) -> DataSplit:
    """Load data named by ``spec``: ``digits`` (default), ``mnist1d``, ``circles`` or
    ``moons`` (generated), ``fashion-mnist`` / ``mnist`` / ``kmnist`` with an optional
    ``:<folder>`` of IDX files (:mod:`neuroplastic.data.idx`), a ``.npz``
    or ``.csv`` file, CIFAR-10 binary batches (their folder or its parent), an image folder,
    or ``torchvision:<Name>:<root>``. ``id_column`` (CSV only) names a column of record ids."""
    if id_column is not None and not spec.endswith(".csv"):
        raise NeuroplasticError("--id-column applies to CSV files only")
    if spec == "digits":
        return digits(seed=seed)
    if spec == "mnist1d":
        return mnist1d()
    if spec in ("circles", "moons"):
        from neuroplastic.data import toy

        return getattr(toy, spec)(seed=seed)
    if spec.startswith("torchvision:"):
        parts = spec.split(":", 2)
        if len(parts) != 3:
            raise NeuroplasticError("torchvision data is named torchvision:<Name>:<root>")
        return load_torchvision(parts[1], parts[2], seed=seed)
    name, _, folder = spec.partition(":")
    if name in IDX_SETS:
        return load_idx(name, folder or None, seed=seed)
    path = Path(spec)
    if not path.exists():
        raise NeuroplasticError(f"data not found: {spec}")
    if path.is_dir():
        if _cifar10_folder(path) is not None:
            return load_cifar10_binary(path, seed=seed)
        return load_image_folder(path, seed=seed)
    if path.suffix == ".npz":
        return load_npz(path, seed=seed)
    if path.suffix == ".csv":
        return load_csv(path, seed=seed, id_column=id_column)
    raise NeuroplasticError(f"unknown data format {path.suffix!r}: use .npz, .csv or a folder")
