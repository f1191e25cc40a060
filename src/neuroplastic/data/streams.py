"""Task streams for continual learning: a sequence of experiences, one per task.

Three settings (van de Ven & Tolias 2019):

- ``task``: the task is known at test time. Each task owns a set of output units
  (``Experience.classes``) and the logits of the other tasks' units are masked, in
  training and evaluation -- separate heads as output masking of one wide head.
- ``domain``: every task uses the same output units (Permuted-digits: the same 10
  digits under another input permutation); no masking.
- ``class``: one head over every class seen so far, no masking.

Builders: :func:`split_stream` (disjoint class groups), :func:`permuted_stream`
(a fixed random permutation of the input features per task; task 0 keeps the
original order), :func:`rotated_stream` (each task the images turned by a fixed angle),
:func:`stream_from_datasets` (any list of data sets), and the named streams of
:func:`load_stream`: ``split-``, ``permuted-`` (and, for images, ``rotated-``) followed by
``digits``, ``mnist1d`` or an IDX data set (``fashion-mnist``, ``mnist``, ``kmnist``, read
from their default folders or ``<name>:<folder>``), plus torchvision's MNIST and CIFAR-100
when they are on disk.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from torch.utils.data import TensorDataset

from neuroplastic.batches import logits_of
from neuroplastic.data.splits import DataSplit, subset
from neuroplastic.errors import NeuroplasticError

SETTINGS = ("task", "domain", "class")
STREAMS = ("split-digits", "permuted-digits", "split-mnist1d", "permuted-mnist1d", "split-fashion-mnist",
           "permuted-fashion-mnist", "rotated-fashion-mnist")
"""The named streams; ``mnist`` and ``kmnist`` stand wherever ``fashion-mnist`` does."""
KINDS = ("split", "permuted", "rotated")
SMALL_SOURCES = ("digits", "mnist1d")
IDX_TASKS = 10
"""Tasks of a permuted or rotated IDX stream by default (Permuted MNIST's 10 in the GPM and
HLOP papers); the small sources default to 5."""


@dataclass
class Experience:
    """One task of a stream: its data (labels already in the stream's output units) and the
    output units it uses."""

    index: int
    train: TensorDataset
    val: TensorDataset
    test: TensorDataset
    classes: tuple[int, ...]
    loss_fn: TaskMaskedLoss | None = field(default=None, repr=False, compare=False)
    """The stream's training loss (set by :class:`Stream`): the one a method that needs the
    task's loss (EWC's Fisher) must use, output-masked in task-IL."""


@dataclass
class Stream:
    """A sequence of experiences in one setting, with ``num_outputs`` output units."""

    name: str
    setting: str
    experiences: list[Experience]
    num_outputs: int

    def __post_init__(self) -> None:
        if self.setting not in SETTINGS:
            raise NeuroplasticError(f"setting must be one of {', '.join(SETTINGS)}, got {self.setting!r}")
        if len(self.experiences) < 2:
            raise NeuroplasticError(f"a stream needs at least two tasks, got {len(self.experiences)}")
        shapes = {tuple(e.train.tensors[0].shape[1:]) for e in self.experiences}
        if len(shapes) > 1:
            raise NeuroplasticError(f"the tasks have different input shapes: {sorted(shapes)}")
        loss = self.loss_fn()
        for experience in self.experiences:
            experience.loss_fn = loss

    def __len__(self) -> int:
        return len(self.experiences)

    def __iter__(self) -> Iterator[Experience]:
        return iter(self.experiences)

    def __getitem__(self, index: int) -> Experience:
        return self.experiences[index]

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.experiences[0].train.tensors[0].shape[1:])

    def allowed_outputs(self) -> Tensor:
        """(num_outputs, num_outputs) bool: row y = the output units a sample labelled y may
        use. Task-IL: the units of y's task; domain- and class-IL: all of them."""
        allowed = torch.ones(self.num_outputs, self.num_outputs, dtype=torch.bool)
        if self.setting == "task":
            allowed[:] = False
            for experience in self.experiences:
                units = torch.tensor(experience.classes)
                for label in experience.classes:
                    allowed[label, units] = True
        return allowed

    def loss_fn(self) -> TaskMaskedLoss:
        """The training loss of this stream (cross-entropy, output-masked in task-IL)."""
        return TaskMaskedLoss(self.allowed_outputs())

    @torch.no_grad()
    def accuracy(self, model: nn.Module, experience: Experience, *, split: str = "test",
                 batch_size: int = 256) -> float:
        """Accuracy of ``model`` on one experience's ``split`` ("test" or "val"), the logits
        masked to the task's units in task-IL."""
        classes = experience.classes if self.setting == "task" else None
        return task_accuracy(model, getattr(experience, split), classes=classes,
                             num_outputs=self.num_outputs, batch_size=batch_size)


@torch.no_grad()
def task_accuracy(model: nn.Module, dataset: TensorDataset, *, classes: Sequence[int] | None,
                  num_outputs: int, batch_size: int = 256) -> float:
    """Accuracy on ``dataset`` with the logits outside ``classes`` masked (None: no mask)."""
    from neuroplastic.batches import eval_mode, iter_batches, model_device
    from neuroplastic.data.splits import loader

    keep = None
    if classes is not None:
        keep = torch.zeros(num_outputs, dtype=torch.bool)
        keep[list(classes)] = True
    correct = total = 0
    with eval_mode(model):
        for x, y in iter_batches(loader(dataset, batch_size=batch_size), device=model_device(model),
                                 name="evaluation"):
            logits = logits_of(model(x))
            if logits.shape[1] != num_outputs:
                raise NeuroplasticError(f"the model has {logits.shape[1]} outputs, the stream needs "
                                        f"{num_outputs}")
            if keep is not None:
                logits = logits.masked_fill(~keep.to(logits.device), float("-inf"))
            correct += int((logits.argmax(1) == y).sum())
            total += len(y)
    return correct / total if total else float("nan")


class TaskMaskedLoss:
    """Cross-entropy where each sample's logits outside the output units its label's task may
    use are masked to -inf (task-IL's separate heads); plain cross-entropy otherwise."""

    def __init__(self, allowed: Tensor) -> None:
        self.allowed = allowed
        self.masks = not bool(allowed.all())

    def masked_logits(self, logits: Tensor, labels: Tensor) -> Tensor:
        """``logits`` with each sample's units outside its task's set to -inf."""
        if not self.masks:
            return logits
        allowed = self.allowed.to(logits.device)[labels]
        return logits.masked_fill(~allowed, float("-inf"))

    def __call__(self, output: Tensor, labels: Tensor) -> Tensor:
        return nn.functional.cross_entropy(self.masked_logits(logits_of(output), labels), labels)


def _relabel(dataset: TensorDataset, mapping: dict[int, int], keep: Tensor | None = None) -> TensorDataset:
    x, y = dataset.tensors
    if keep is not None:
        x, y = x[keep], y[keep]
    return TensorDataset(x, torch.tensor([mapping[int(v)] for v in y], dtype=torch.long))


def split_stream(data: DataSplit, *, classes_per_task: int = 2, setting: str = "task",
                 name: str | None = None) -> Stream:
    """Disjoint groups of ``classes_per_task`` consecutive classes, one group per task.

    Task- and class-IL keep the labels (one head over every class, masked per task in
    task-IL); domain-IL maps each task's classes to 0..classes_per_task-1 (a shared head).
    """
    if setting not in SETTINGS:
        raise NeuroplasticError(f"setting must be one of {', '.join(SETTINGS)}, got {setting!r}")
    if classes_per_task < 1 or data.num_classes % classes_per_task:
        raise NeuroplasticError(f"{data.num_classes} classes cannot be split into groups of "
                                f"{classes_per_task}")
    experiences = []
    for index, first in enumerate(range(0, data.num_classes, classes_per_task)):
        group = list(range(first, first + classes_per_task))
        mapping = {c: (c - first if setting == "domain" else c) for c in group}

        def part(dataset: TensorDataset, group: list[int] = group,
                 mapping: dict[int, int] = mapping) -> TensorDataset:
            keep = torch.isin(dataset.tensors[1], torch.tensor(group))
            return _relabel(dataset, mapping, keep)

        classes = tuple(range(classes_per_task)) if setting == "domain" else tuple(group)
        experiences.append(Experience(index=index, train=part(data.train), val=part(data.val),
                                      test=part(data.test), classes=classes))
    outputs = classes_per_task if setting == "domain" else data.num_classes
    return Stream(name=name or f"split-{data.name}", setting=setting, experiences=experiences,
                  num_outputs=outputs)


def permuted_stream(data: DataSplit, *, tasks: int = 5, setting: str = "domain", seed: int = 0,
                    name: str | None = None) -> Stream:
    """``tasks`` tasks, each the whole data set with its input features (all dimensions
    flattened) in a fixed random order; task 0 keeps the original order (as in van de Ven's
    continual-learning code). Domain-IL shares the output units; task- and class-IL give
    task t the units t*K .. t*K+K-1."""
    if setting not in SETTINGS:
        raise NeuroplasticError(f"setting must be one of {', '.join(SETTINGS)}, got {setting!r}")
    if tasks < 2:
        raise NeuroplasticError(f"a stream needs at least two tasks, got {tasks}")
    generator = torch.Generator().manual_seed(seed)
    features = int(torch.tensor(data.input_shape).prod())
    k = data.num_classes
    experiences = []
    for index in range(tasks):
        order = torch.arange(features) if index == 0 else torch.randperm(features, generator=generator)
        offset = 0 if setting == "domain" else index * k

        def part(dataset: TensorDataset, order: Tensor = order, offset: int = offset) -> TensorDataset:
            x, y = dataset.tensors
            permuted = x.reshape(len(x), -1)[:, order].reshape(x.shape)
            return TensorDataset(permuted, y + offset)

        experiences.append(Experience(index=index, train=part(data.train), val=part(data.val),
                                      test=part(data.test), classes=tuple(range(offset, offset + k))))
    outputs = k if setting == "domain" else k * tasks
    return Stream(name=name or f"permuted-{data.name}", setting=setting, experiences=experiences,
                  num_outputs=outputs)


def stream_from_datasets(tasks: Sequence[tuple[TensorDataset, TensorDataset] |
                                         tuple[TensorDataset, TensorDataset, TensorDataset]], *,
                         setting: str = "task", name: str = "custom", val_fraction: float = 0.1,
                         seed: int = 0) -> Stream:
    """A stream from a user's list of ``(train, test)`` or ``(train, val, test)`` data sets, in
    order. Labels are used as they are (task-IL: each task's units are the labels it uses);
    without a validation set, ``val_fraction`` of each train set is held out at random."""
    experiences = []
    generator = torch.Generator().manual_seed(seed)
    for index, parts in enumerate(tasks):
        if len(parts) == 3:
            train, val, test = parts  # type: ignore[misc]
        elif len(parts) == 2:
            full, test = parts  # type: ignore[misc]
            order = torch.randperm(len(full), generator=generator)
            cut = max(1, int(len(full) * val_fraction))
            train, val = subset(full, order[cut:]), subset(full, order[:cut])
        else:
            raise NeuroplasticError(f"task {index}: give (train, test) or (train, val, test)")
        labels = torch.cat([train.tensors[1], test.tensors[1]])
        experiences.append(Experience(index=index, train=train, val=val, test=test,
                                      classes=tuple(sorted(set(labels.tolist())))))
    outputs = 1 + max(max(e.classes) for e in experiences) if experiences else 0
    return Stream(name=name, setting=setting, experiences=experiences, num_outputs=outputs)


def rotated_stream(data: DataSplit, *, tasks: int = IDX_TASKS, setting: str = "domain",
                   angles: Sequence[float] | None = None, name: str | None = None) -> Stream:
    """``tasks`` tasks, each the whole data set with every image turned by a fixed angle
    (bilinear, about the image centre, zeros outside). ``angles`` in degrees, one per task;
    default evenly spaced over a half turn, ``t * 180 / tasks`` (task 0 unrotated).
    Domain-IL shares the output units; task- and class-IL give task t the units t*K .. t*K+K-1.

    Raises:
        NeuroplasticError: if the inputs are not images (C, H, W) or the angles do not match.
    """
    if setting not in SETTINGS:
        raise NeuroplasticError(f"setting must be one of {', '.join(SETTINGS)}, got {setting!r}")
    shape = tuple(data.input_shape)
    if len(shape) != 3 or shape[1] != shape[2]:
        raise NeuroplasticError(f"a rotated stream needs square images (channels, height, width); "
                                f"{data.name} has inputs of shape {shape}")
    angles = [t * 180.0 / tasks for t in range(tasks)] if angles is None else list(angles)
    if len(angles) != tasks or tasks < 2:
        raise NeuroplasticError(f"a rotated stream needs at least two tasks and one angle per task, got "
                                f"{tasks} tasks and {len(angles)} angles")
    k = data.num_classes
    experiences = []
    for index, angle in enumerate(angles):
        offset = 0 if setting == "domain" else index * k

        def part(dataset: TensorDataset, angle: float = angle, offset: int = offset) -> TensorDataset:
            x, y = dataset.tensors
            return TensorDataset(rotate_images(x, angle), y + offset)

        experiences.append(Experience(index=index, train=part(data.train), val=part(data.val),
                                      test=part(data.test), classes=tuple(range(offset, offset + k))))
    outputs = k if setting == "domain" else k * tasks
    return Stream(name=name or f"rotated-{data.name}", setting=setting, experiences=experiences,
                  num_outputs=outputs)


def rotate_images(x: Tensor, degrees: float, *, chunk: int = 8192) -> Tensor:
    """Images ``x`` (N, C, H, W) turned counter-clockwise by ``degrees`` about their centre
    (bilinear; zeros where no pixel lands). 0 degrees returns ``x`` itself."""
    if degrees % 360 == 0:
        return x
    theta = torch.tensor(degrees * torch.pi / 180.0, dtype=torch.float64)
    cos, sin = float(torch.cos(theta)), float(torch.sin(theta))
    # affine_grid maps output coordinates to input ones: the inverse rotation, y pointing down
    matrix = torch.tensor([[cos, -sin, 0.0], [sin, cos, 0.0]], dtype=x.dtype)
    turned = []
    for start in range(0, len(x), chunk):
        batch = x[start:start + chunk]
        grid = nn.functional.affine_grid(matrix.expand(len(batch), 2, 3), list(batch.shape),
                                         align_corners=False)
        turned.append(nn.functional.grid_sample(batch, grid, mode="bilinear", padding_mode="zeros",
                                                align_corners=False))
    return torch.cat(turned) if turned else x.clone()


def parse_stream_name(name: str) -> tuple[str, str, str | None]:
    """``<kind>-<source>[:<folder>]`` as (kind, source, folder).

    Raises:
        NeuroplasticError: if the kind or source is unknown, or a small source has a folder.
    """
    from neuroplastic.data.idx import IDX_SETS

    base, _, folder = name.partition(":")
    kind, _, source = base.partition("-")
    known = f"choose from {', '.join(STREAMS)} (mnist or kmnist for fashion-mnist; an IDX data set " \
            "may add :<folder>) or torchvision:<split|permuted>-<MNIST|CIFAR100>:<root>"
    if kind not in KINDS or source not in (*SMALL_SOURCES, *IDX_SETS):
        raise NeuroplasticError(f"unknown scenario {name!r}; {known}")
    if folder and source in SMALL_SOURCES:
        raise NeuroplasticError(f"scenario {name!r}: {source} is built in and takes no folder")
    if kind == "rotated" and source in SMALL_SOURCES:
        raise NeuroplasticError(f"scenario {name!r}: rotated streams need 28x28 images (fashion-mnist, "
                                f"mnist, kmnist); {source} is not an image data set")
    return kind, source, folder or None


def load_stream(name: str, *, tasks: int | None = None, setting: str | None = None,
                seed: int = 0) -> Stream:
    """A named stream ``<kind>-<source>[:<folder>]``.

    Kinds: ``split`` (5 tasks of 2 classes; task-IL unless ``setting`` says otherwise),
    ``permuted`` and ``rotated`` (domain-IL unless ``setting``; ``tasks`` tasks, default 5
    on the small sources and 10 on IDX data). Sources: ``digits``, ``mnist1d`` (built in),
    ``fashion-mnist``, ``mnist``, ``kmnist`` (IDX files from their default folders or
    ``:<folder>``, see :mod:`neuroplastic.data.idx`). Also
    ``torchvision:<split|permuted>-<MNIST|CIFAR100>:<root>`` for torchvision's files on disk.

    Raises:
        NeuroplasticError: for an unknown name, or IDX files that are missing or malformed.
    """
    if name.startswith("torchvision:"):
        return _torchvision_stream(name, tasks=tasks or 5, setting=setting, seed=seed)
    kind, source, folder = parse_stream_name(name)
    if source in SMALL_SOURCES:
        from neuroplastic.data.digits import digits
        from neuroplastic.data.mnist1d import mnist1d

        data = digits(seed=seed) if source == "digits" else mnist1d()
        default_tasks = 5
    else:
        from neuroplastic.data.idx import load_idx

        try:
            data = load_idx(source, folder, seed=seed)
        except NeuroplasticError as err:  # the loader speaks of --data; a stream is named by --scenario
            named = str(err).replace(f"--data {source}:", f"--scenario {kind}-{source}:")
            raise NeuroplasticError(named) from None
        default_tasks = IDX_TASKS
    label = f"{kind}-{source}"
    if kind == "split":
        return split_stream(data, setting=setting or "task", name=label)
    if kind == "rotated":
        return rotated_stream(data, tasks=tasks or default_tasks, setting=setting or "domain", name=label)
    return permuted_stream(data, tasks=tasks or default_tasks, setting=setting or "domain", seed=seed,
                           name=label)


def _torchvision_stream(spec: str, *, tasks: int, setting: str | None, seed: int) -> Stream:
    from neuroplastic.data.loaders import load_torchvision

    parts = spec.split(":", 2)
    if len(parts) != 3 or parts[1] not in ("split-MNIST", "permuted-MNIST", "split-CIFAR100"):
        raise NeuroplasticError("torchvision streams are torchvision:split-MNIST:<root>, "
                                "torchvision:permuted-MNIST:<root> or torchvision:split-CIFAR100:<root>")
    kind, dataset = parts[1].split("-")
    data = load_torchvision(dataset, parts[2], seed=seed)
    if kind == "split":
        per_task = data.num_classes // tasks if data.num_classes % tasks == 0 else 2
        return split_stream(data, classes_per_task=per_task, setting=setting or "task", name=parts[1])
    return permuted_stream(data, tasks=tasks, setting=setting or "domain", seed=seed, name=parts[1])
