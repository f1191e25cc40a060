"""The forget verb: ``Unlearner.unlearn(model, forget, retain=None) -> UnlearnResult``."""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from neuroplastic.batches import eval_mode, iter_batches, model_device, require_reiterable
from neuroplastic.errors import NeuroplasticError, first_line
from neuroplastic.intervene.atomic import atomic
from neuroplastic.loop import ProgressFn
from neuroplastic.types import Data


@dataclass
class UnlearnResult:
    """What an unlearning call did.

    Attributes:
        metrics: flat numbers and strings: ``seconds`` (whole call) and
            ``<phase>_seconds``, plus method-specific choices (e.g. ``alpha``).
        trace: per-candidate records of methods that search (ssd-auto).
    """

    metrics: dict[str, Any] = field(default_factory=dict)
    trace: list[dict[str, float]] = field(default_factory=list)


class Unlearner(ABC):
    """Removes the influence of a forget set from a trained model, in place.

    Subclasses implement :meth:`_unlearn`. The public :meth:`unlearn` checks
    the data first and is atomic: if anything fails, every parameter and
    buffer of the model is restored bit for bit.
    """

    #: True when, without ``full``, the method builds D from the request as its paper's
    #: code does (SSD); the experiment then passes ``full`` only if asked to.
    builds_published_d: bool = False

    #: ``progress(done, total)`` after every training step of a method that trains for
    #: long (retraining, a baseline's finetuning, ssd-auto's repair); set by whoever shows
    #: it, not a hyperparameter.
    progress: ProgressFn | None = None

    #: ``announce(phase)`` as each timed phase starts (``full_importance``, ``search``,
    #: ``repair``, ...: the names of its ``<phase>_seconds`` metrics); set by whoever shows
    #: it, not a hyperparameter.
    announce: Callable[[str], None] | None = None

    name: str = "unlearner"

    def unlearn(self, model: nn.Module, forget: Data, retain: Data | None = None, *,
                full: Data | None = None, holdout: Data | None = None) -> UnlearnResult:
        """Forget ``forget`` in ``model`` (modified in place; deep-copy it first to keep it).

        Args:
            model: any classifier mapping inputs to logits (or an output with ``.logits``).
            forget: re-iterable ``(x, y)`` batches to forget.
            retain: the rest of the training data (needed by most methods).
            full: the whole training set as the model saw it (default: retain
                then forget). Pass the same unshuffled loader on every request
                so its importance is computed once and cached.
            holdout: data never trained on, used only by methods that choose
                their own hyperparameters (ssd-auto); never the test set.

        Returns:
            An :class:`UnlearnResult`.
        """
        require_reiterable(forget, "forget")
        for data, what in ((retain, "retain"), (full, "full"), (holdout, "holdout")):
            if data is not None:
                require_reiterable(data, what)
        check_inputs(model, forget, retain)
        start = time.perf_counter()
        with atomic(model):
            result = self._unlearn(model, forget, retain, full=full, holdout=holdout)
        model.eval()
        result.metrics["seconds"] = time.perf_counter() - start
        result.metrics.setdefault("method", self.name)
        return result

    @abstractmethod
    def _unlearn(self, model: nn.Module, forget: Data, retain: Data | None, *,
                 full: Data | None, holdout: Data | None) -> UnlearnResult:
        """Method body; may assume non-empty, well-formed data."""


def check_inputs(model: nn.Module, forget: Data, retain: Data | None) -> None:
    """Fail early, with one line, on an empty forget set or inputs the model cannot take."""
    first = next(iter(iter_batches(forget, device=model_device(model), name="forget")), None)
    if first is None:
        raise NeuroplasticError("the forget set is empty")
    if retain is not None:
        other = next(iter(iter_batches(retain, device="cpu", name="retain")), None)
        if other is None:
            raise NeuroplasticError("the retain set is empty")
        if tuple(other[0].shape[1:]) != tuple(first[0].shape[1:]):
            raise NeuroplasticError(
                f"forget inputs have shape {tuple(first[0].shape[1:])} but retain inputs "
                f"{tuple(other[0].shape[1:])}"
            )
    try:
        with torch.no_grad(), eval_mode(model):
            model(first[0][:1])
    except (RuntimeError, ValueError, TypeError) as err:
        raise NeuroplasticError(
            f"the model cannot take inputs of shape {tuple(first[0].shape[1:])}: {first_line(err)}"
        ) from None


def require_retain(retain: Data | None, method: str) -> Data:
    """Return ``retain`` or raise a one-line error naming the method that needs it."""
    if retain is None:
        raise NeuroplasticError(f"{method} needs retain data")
    return retain


class Timer:
    """Collects wall-clock seconds of named phases into a metrics dict; ``announce(name)``,
    if given, as each phase starts."""

    def __init__(self, metrics: dict[str, Any], *, announce: Callable[[str], None] | None = None) -> None:
        self.metrics, self.announce = metrics, announce

    def phase(self, name: str) -> _Phase:
        return _Phase(self.metrics, name, self.announce)


class _Phase:
    def __init__(self, metrics: dict[str, Any], name: str, announce: Callable[[str], None] | None) -> None:
        self.metrics, self.name, self.key, self.announce = metrics, name, f"{name}_seconds", announce

    def __enter__(self) -> None:
        if self.announce is not None:
            self.announce(self.name)
        self.start = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        self.metrics[self.key] = self.metrics.get(self.key, 0.0) + time.perf_counter() - self.start
