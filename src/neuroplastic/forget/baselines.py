"""Baselines: retrain from scratch, finetune, NegGrad+, random labels."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import torch
from torch import nn

from neuroplastic.batches import iter_batches, logits_of, model_device
from neuroplastic.errors import NeuroplasticError
from neuroplastic.forget.base import Timer, Unlearner, UnlearnResult, require_retain
from neuroplastic.importance.base import cross_entropy
from neuroplastic.registry import register
from neuroplastic.training import reinitialize_, train_epochs
from neuroplastic.types import Data


def _check_positive(**values: float) -> None:
    for key, value in values.items():
        if not value > 0:
            raise NeuroplasticError(f"{key} must be > 0, got {value}")


@register("retrain", kind="forget", needs=('retain', 'labels'))
class Retrain(Unlearner):
    """Retrain from scratch on the retain data: fresh initialisation, same recipe.

    The gold standard every method is compared with. Unlike the SSD
    reference's "retrain" baseline it re-initialises every layer, not only
    the classifier head.

    Args:
        epochs, lr, weight_decay: the training recipe (Adam), as for the original model.
        factory: builds a fresh model; if ``None`` the model's own modules are
            re-initialised with ``reset_parameters`` (seeded by ``seed``).
        seed: initialisation seed.
    """

    baseline = True

    def __init__(self, *, epochs: int = 30, lr: float = 1e-3, weight_decay: float = 0.0,
                 factory: Callable[[], nn.Module] | None = None, seed: int = 0) -> None:
        _check_positive(epochs=epochs, lr=lr)
        self.epochs, self.lr, self.weight_decay = epochs, lr, weight_decay
        self.factory, self.seed = factory, seed

    def _unlearn(self, model: nn.Module, forget: Data, retain: Data | None, *,
                 full: Data | None, holdout: Data | None) -> UnlearnResult:
        retain = require_retain(retain, self.name)
        result = UnlearnResult()
        with Timer(result.metrics, announce=self.announce).phase("train"):
            if self.factory is None:
                reinitialize_(model, seed=self.seed)
            else:
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(self.seed)
                    fresh = self.factory().to(model_device(model))
                model.load_state_dict(fresh.state_dict())
            train_epochs(model, retain, epochs=self.epochs, lr=self.lr,
                         weight_decay=self.weight_decay, progress=self.progress)
        return result


@register("finetune", kind="forget", needs=('retain', 'labels'))
class Finetune(Unlearner):
    """Continue training on the retain data only, letting the forget set fade
    (catastrophic forgetting as an unlearning baseline)."""

    def __init__(self, *, epochs: float = 5, lr: float = 1e-3) -> None:
        _check_positive(epochs=epochs, lr=lr)
        self.epochs, self.lr = epochs, lr

    def _unlearn(self, model: nn.Module, forget: Data, retain: Data | None, *,
                 full: Data | None, holdout: Data | None) -> UnlearnResult:
        retain = require_retain(retain, self.name)
        result = UnlearnResult(metrics={"epochs": self.epochs})
        with Timer(result.metrics, announce=self.announce).phase("train"):
            train_epochs(model, retain, epochs=self.epochs, lr=self.lr, progress=self.progress)
        return result


class _PairedUnlearner(Unlearner):
    """Epochs over the retain data, each retain batch paired with a (cycled) forget batch."""

    def __init__(self, *, epochs: float = 5, lr: float = 1e-3, seed: int = 0) -> None:
        _check_positive(epochs=epochs, lr=lr)
        self.epochs, self.lr, self.seed = epochs, lr, seed

    def pair_loss(self, model: nn.Module, retain: tuple[torch.Tensor, torch.Tensor],
                  forget: tuple[torch.Tensor, torch.Tensor],
                  generator: torch.Generator) -> torch.Tensor:
        raise NotImplementedError

    def _unlearn(self, model: nn.Module, forget: Data, retain: Data | None, *,
                 full: Data | None, holdout: Data | None) -> UnlearnResult:
        retain = require_retain(retain, self.name)
        result = UnlearnResult(metrics={"epochs": self.epochs})
        device = model_device(model)
        generator = torch.Generator(device=device).manual_seed(self.seed)
        forget_batches = itertools.cycle(list(iter_batches(forget, device=device, name="forget")))

        def batch_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return self.pair_loss(model, (x, y), next(forget_batches), generator)

        with Timer(result.metrics, announce=self.announce).phase("train"):
            train_epochs(model, retain, epochs=self.epochs, lr=self.lr, batch_loss=batch_loss,
                         progress=self.progress)
        return result


@register("neggrad+", kind="forget", needs=('retain', 'labels'))
class NegGradPlus(_PairedUnlearner):
    """NegGrad+ (Kurmanji et al., NeurIPS 2023): minimise beta * L_retain - (1 - beta) * L_forget.

    Args:
        beta: weight of the retain loss in (0, 1).
        epochs, lr: Adam steps over the retain data.
    """

    def __init__(self, *, beta: float = 0.95, epochs: float = 2, lr: float = 1e-3,
                 seed: int = 0) -> None:
        if not 0 < beta < 1:
            raise NeuroplasticError(f"beta must be in (0, 1), got {beta}")
        super().__init__(epochs=epochs, lr=lr, seed=seed)
        self.beta = beta

    def pair_loss(self, model, retain, forget, generator):  # type: ignore[no-untyped-def]
        return neggrad_loss(model, retain, forget, beta=self.beta)


def neggrad_loss(model: nn.Module, retain: tuple[torch.Tensor, torch.Tensor],
                 forget: tuple[torch.Tensor, torch.Tensor], *, beta: float) -> torch.Tensor:
    """NegGrad+'s loss, beta * L_retain - (1 - beta) * L_forget (Kurmanji et al., NeurIPS
    2023), on one retain and one forget batch (the retain forward first)."""
    return (beta * cross_entropy(model(retain[0]), retain[1])
            - (1 - beta) * cross_entropy(model(forget[0]), forget[1]))


@register("random-labels", kind="forget", needs=('retain', 'labels'))
class RandomLabels(_PairedUnlearner):
    """Random relabelling (Golatkar et al. 2020; Graves et al. 2021): finetune on the forget
    samples with random wrong labels, mixed with retain batches."""

    def pair_loss(self, model, retain, forget, generator):  # type: ignore[no-untyped-def]
        x_f, y_f = forget
        logits_f = logits_of(model(x_f))
        classes = logits_f.shape[-1]
        shift = torch.randint(1, classes, y_f.shape, generator=generator, device=y_f.device)
        wrong = (y_f + shift) % classes
        return cross_entropy(model(retain[0]), retain[1]) + cross_entropy(logits_f, wrong)

