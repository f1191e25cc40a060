"""The ``learn`` kind's one protocol: what every registered learning method provides, so
:func:`neuroplastic.local.runner.learn` is ``registry.create`` + this interface, with no
method named anywhere outside its own class.

A :class:`LearnMethod` says which network it trains by default (:meth:`~LearnMethod.network`),
how it trains it (:meth:`~LearnMethod.train`, through :func:`neuroplastic.loop.fit`), with
which defaults (:attr:`~LearnMethod.defaults`), which loss its backprop twin minimises, and
which control networks a comparison adds beside the twin.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from torch import Tensor, nn
from torch.utils.data import DataLoader

from neuroplastic.data.splits import DataSplit
from neuroplastic.loop import ProgressFn
from neuroplastic.types import LossFn


@dataclass(frozen=True)
class LearnDefaults:
    """What ``neuroplastic learn`` uses when an option is not given."""

    hidden: tuple[int, ...]
    epochs: int
    lr: float
    batch_size: int


@dataclass
class LearnContext:
    """Everything a method's :meth:`LearnMethod.train` may use.

    Attributes:
        split: the data (the test split is only measured, never trained on).
        epochs, lr, batch_size, seed: the run's settings (defaults already applied).
        batches: ``batches(size)`` -- a fresh seeded shuffling loader over the training split
            (every network of a run sees the same batch order).
        example: two training inputs on the device (shapes, without reading a loader).
        plugins: loop plugins the runner wants in the method's main loop (accuracy curves).
        progress: a ``progress(done, total)`` callback, or None.
        loss_fn: the loss a baseline trains with (None: cross-entropy).
    """

    split: DataSplit
    epochs: int
    lr: float
    batch_size: int
    seed: int
    batches: Callable[[int], DataLoader]
    example: Tensor
    plugins: list[Any] = field(default_factory=list)
    progress: ProgressFn | None = None
    loss_fn: LossFn | None = None


@dataclass
class LearnOutcome:
    """What a method reports beyond accuracy: its own metrics, notes for the user (warnings),
    and per-epoch alignment with backprop (layer -> (cosine, sign agreement))."""

    metrics: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    alignment: list[dict[str, tuple[float, float]]] = field(default_factory=list)


Control = Callable[[nn.Module, LearnContext], LearnOutcome]


class LearnMethod:
    """Base of every registered ``learn`` method.

    Class attributes:
        defaults: hidden widths, epochs, learning rate and batch size of ``neuroplastic learn``.
        own_network: True when the method trains its own layer types (so a user's model
            factory or ``--model-arch`` cannot stand in for :meth:`network`).
        twin_batch_size: the batch size of the backprop twin when it differs from the run's.
        curve_note: how to read the method's epoch axis in plots (e.g. readout epochs).
    """

    defaults: ClassVar[LearnDefaults]
    own_network: ClassVar[bool] = False
    twin_batch_size: ClassVar[int | None] = None
    curve_note: ClassVar[str] = ""

    def network(self, split: DataSplit, hidden: tuple[int, ...]) -> nn.Module:
        """The network the method trains by default: a sigmoid MLP of ``hidden`` widths (the
        bidirectional reference's)."""
        return mlp(split, hidden, activation=nn.Sigmoid)

    def train(self, model: nn.Module, ctx: LearnContext) -> LearnOutcome:
        """Train ``model`` in place."""
        raise NotImplementedError

    def twin_loss(self) -> LossFn | None:
        """The loss backprop of the same network minimises beside this method (None:
        cross-entropy)."""
        return None

    def controls(self) -> dict[str, Control]:
        """Extra networks a comparison trains beside the backprop twin, by run name."""
        return {}


def mlp(split: DataSplit, hidden: tuple[int, ...], *, activation: type[nn.Module]) -> nn.Sequential:
    """Flatten, then ``Linear`` + ``activation`` per hidden width, then a linear readout."""
    width = math.prod(split.input_shape)
    layers: list[nn.Module] = [nn.Flatten()]
    for size in hidden:
        layers += [nn.Linear(width, size), activation()]
        width = size
    layers.append(nn.Linear(width, split.num_classes))
    return nn.Sequential(*layers)
