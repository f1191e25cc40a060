"""The reference training recipe (used for base models, retraining and finetuning)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from neuroplastic import loop
from neuroplastic.batches import model_device, seeded_rng
from neuroplastic.errors import NeuroplasticError
from neuroplastic.loop import BatchLoss, ProgressFn, StopWhen, Units
from neuroplastic.types import Data, LossFn


@dataclass(frozen=True)
class TrainConfig:
    """Adam with a constant learning rate for a fixed number of epochs.

    The defaults train the reference CNN to 100% training accuracy on digits.
    """

    epochs: int = 30
    lr: float = 1e-3
    batch_size: int = 64
    weight_decay: float = 0.0
    seed: int = 0

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


def train_epochs(model: nn.Module, data: Data, *, epochs: float, lr: float,
                 weight_decay: float = 0.0, loss_fn: LossFn | None = None,
                 progress: ProgressFn | None = None,
                 should_stop: Callable[[int], bool] | None = None,
                 batch_loss: BatchLoss | None = None, plugins: Sequence[Any] = (),
                 units: Units | None = None) -> int:
    """Train ``model`` in place with Adam for ``epochs`` passes over ``data`` (fractional
    epochs stop mid-pass), through :func:`neuroplastic.loop.fit`. ``should_stop(steps)``
    is asked after every step and ends training early if true; ``batch_loss(model, x, y)``,
    if given, replaces ``loss_fn(model(x), y)``; ``plugins`` join the loop; ``units`` is
    what the loss averages over (``loop.fit``'s, for a process group).

    Returns:
        The number of optimizer steps taken.
    """
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    stop = [StopWhen(should_stop)] if should_stop is not None else []
    return loop.fit(model, data, optimizer=optimizer, epochs=epochs, loss_fn=loss_fn,
                    batch_loss=batch_loss, plugins=[*plugins, *stop], progress=progress, units=units).steps


def reinitialize_(model: nn.Module, *, seed: int = 0) -> nn.Module:
    """Fresh initialisation of every parameter, in place, via each module's ``reset_parameters``.

    A true re-initialisation (not a head reset), seeded, for retraining from
    scratch when no model factory is given.

    Raises:
        NeuroplasticError: if some parameter's module has no ``reset_parameters``
            (nothing is changed then); pass a factory instead.
    """
    resettable = [m for m in model.modules() if callable(getattr(m, "reset_parameters", None))]
    covered = {id(p) for m in resettable for p in m.parameters(recurse=False)}
    for name, param in model.named_parameters():
        if id(param) not in covered:
            raise NeuroplasticError(
                f"cannot re-initialise parameter {name!r}: its module has no reset_parameters; "
                "pass a model factory"
            )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for module in resettable:
            module.reset_parameters()
    return model


def fit(model: nn.Module, dataset: torch.utils.data.Dataset, config: TrainConfig, *,
        progress: ProgressFn | None = None) -> nn.Module:
    """Train ``model`` on ``dataset`` with the reference recipe: seeded shuffling, and the
    global RNG seeded with ``config.seed`` (dropout draws the same masks on every call)."""
    from neuroplastic.data.splits import loader

    data = loader(dataset, batch_size=config.batch_size, shuffle=True, seed=config.seed)
    with seeded_rng(config.seed, model_device(model)):
        train_epochs(model, data, epochs=config.epochs, lr=config.lr,
                     weight_decay=config.weight_decay, progress=progress)
    return model
