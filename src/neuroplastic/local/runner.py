"""One call that trains a network with a local rule and, beside it, the same architecture by
backprop, then measures both the same way (accuracy, robustness, alignment): what
``neuroplastic learn`` and ``benchmarks/local.py`` run."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import nn
from torch.utils.data import DataLoader

from neuroplastic import loop, registry
from neuroplastic.batches import seeded_rng
from neuroplastic.data.splits import DataSplit, loader
from neuroplastic.errors import NeuroplasticError
from neuroplastic.evaluate.outputs import accuracy
from neuroplastic.evaluate.robustness import Robustness, masking_warnings, robustness
from neuroplastic.local.protocol import LearnContext, LearnDefaults, LearnMethod, LearnOutcome
from neuroplastic.loop import Plugin, ProgressFn
from neuroplastic.models.factory import seeded_model
from neuroplastic.runs import merge_runs


def rules() -> list[str]:
    """Every registered ``learn`` method's name."""
    return [entry.name for entry in registry.available("learn")]


def defaults_of(rule: str) -> LearnDefaults:
    """The ``neuroplastic learn`` defaults of registered method ``rule``."""
    return registry.get(rule, kind="learn").defaults


@dataclass
class Trained:
    """One trained network and what was measured on it."""

    model: nn.Module
    metrics: dict[str, float] = field(default_factory=dict)
    curve: list[tuple[int, float, float]] = field(default_factory=list)  # (epoch, train, test)
    robustness: Robustness | None = None
    alignment: list[dict[str, tuple[float, float]]] = field(default_factory=list)


@dataclass
class LearnResult:
    """The rule's network, its backprop twin (and SoftHebb's random-features control)."""

    rule: str
    runs: dict[str, Trained]
    notes: list[str]
    curve_note: str = ""  # how to read the rule's epoch axis (e.g. "readout epochs")
    baseline: str | None = None  # the run trained by the registered baseline (backprop)
    controls: tuple[str, ...] = ()  # the method's control runs (SoftHebb's random features)

    def metrics(self) -> dict[str, float]:
        """Flat keys: the rule's own (``test_acc``, ``robust.fgsm.0.2``, ``alignment.hidden.0``,
        ...) and every other run's under its name (``backprop.test_acc``, ...)."""
        return merge_runs(self.rule, {name: run.metrics for name, run in self.runs.items()})


class AccuracyCurve(Plugin):
    """After every epoch: accuracy of ``network`` (the whole model, whichever part the loop
    trains) on the training and test data."""

    def __init__(self, network: nn.Module, train: Any, test: Any,
                 curve: list[tuple[int, float, float]]) -> None:
        self.network, self.train, self.test, self.curve = network, train, test, curve

    def after_epoch(self, model: nn.Module, epoch: int) -> None:
        self.curve.append((epoch, accuracy(self.network, self.train), accuracy(self.network, self.test)))


def input_bounds(split: DataSplit) -> tuple[float, float] | None:
    """(0, 1) when every training input lies in it (images), else None (no clipping)."""
    x = split.train.tensors[0]
    return (0.0, 1.0) if float(x.min()) >= 0 and float(x.max()) <= 1 else None


def robustness_data(split: DataSplit, samples: int | None, *, seed: int) -> DataLoader | None:
    """The test data the robustness evaluation runs on: the whole test split (``None``), a
    class-stratified subset of ``samples`` of it drawn with ``seed``, or nothing (0).

    Raises:
        NeuroplasticError: if ``samples`` is negative, or positive and not between the class
            count and the test split's size.
    """
    if samples is None or samples == len(split.test):
        return loader(split.test, batch_size=512)
    if samples < 0:
        raise NeuroplasticError(f"robustness samples must be >= 0 (0 skips the evaluation), got {samples}")
    if samples == 0:
        return None
    return loader(split.stratified_subset(test=samples, seed=seed).test, batch_size=512)


def build_network(rule: str, split: DataSplit, hidden: tuple[int, ...], **params: Any) -> nn.Module:
    """The network registered method ``rule`` (built with ``params``) trains by default; its
    backprop twin is the same."""
    method: LearnMethod = registry.create(rule, kind="learn", **params)
    return method.network(split, hidden)


def learn(rule: str, split: DataSplit, *, hidden: tuple[int, ...] | None = None, epochs: int | None = None,
          lr: float | None = None, batch_size: int | None = None, seed: int = 0,
          params: dict[str, Any] | None = None, compare: bool = True, device: str = "cpu",
          factory: Callable[[], nn.Module] | None = None, measure_robustness: bool = True,
          robustness_samples: int | None = None,
          progress: Callable[[str], ProgressFn | None] | None = None) -> LearnResult:
    """Train with ``rule`` (and, with ``compare``, the same architecture by backprop), then
    measure train/test accuracy per epoch, robustness, and for dis-inhibitory control the
    alignment of its updates with backprop's gradients.

    Every step is the registered method's (:class:`~neuroplastic.local.protocol.LearnMethod`):
    its network, its training, its defaults, the loss of its backprop twin and its controls.

    Args:
        rule: a registered ``learn`` method (:func:`rules`).
        split: the data (classification); the test split is only measured, never trained on.
        hidden, epochs, lr, batch_size: ``None`` takes the method's ``defaults``.
        params: the method's own hyperparameters (see its docstring).
        factory: builds the classifier instead of the method's network (not for methods that
            train their own layer types, ``own_network``).
        measure_robustness: measure every network's robustness (FGSM, PGD, noise) on the test
            split after training.
        robustness_samples: measure it on a class-stratified, seeded subset of this many test
            samples instead of the whole test split (PGD's 40 passes over it are most of a short
            run on a large test split); 0 skips it. Accuracies use the whole test split either way.
        progress: ``progress(label)`` returns a ``progress(done, total)`` callback or None.
    """
    entry = registry.entry(rule, kind="learn")  # an unknown rule: one line naming the registered ones
    method: LearnMethod = registry.create(rule, kind="learn", **(params or {}))
    base = method.defaults
    hidden = hidden or base.hidden
    epochs = epochs or base.epochs
    lr = lr or base.lr
    batch_size = batch_size or base.batch_size
    if factory is not None and method.own_network:
        raise NeuroplasticError(f"{rule} trains its own network type (E/I pairs, Hebbian blocks); "
                                "--model-factory applies only to methods that train any network")
    make = factory or (lambda: method.network(split, hidden))
    robust_eval = robustness_data(split, robustness_samples, seed=seed) if measure_robustness else None

    def batches(size: int = batch_size) -> DataLoader:
        """A fresh shuffling loader per run: every network sees the same batch order."""
        return loader(split.train, batch_size=size, shuffle=True, seed=seed)

    example = split.train.tensors[0][:2].to(device)
    train_eval, test_eval = loader(split.train, batch_size=512), loader(split.test, batch_size=512)
    bounds = input_bounds(split)
    notes: list[str] = []
    runs: dict[str, Trained] = {}
    bar = progress or (lambda label: None)

    def train(name: str, trainer: Callable[[nn.Module, LearnContext], LearnOutcome], *,
              size: int = batch_size, loss_fn: Any = None, warm_up: bool = False) -> None:
        """Train a fresh seeded network with ``trainer``, then measure it the same way as
        every other run (accuracy, robustness)."""
        model = seeded_model(make, seed, device)
        if warm_up:  # not in the rule's seconds
            loop.warm_up(model, example, split.train.tensors[1][:2].to(device))
        run = Trained(model)
        ctx = LearnContext(split=split, epochs=epochs, lr=lr, batch_size=size, seed=seed, batches=batches,
                           example=example, progress=bar(name.replace("_", " ")), loss_fn=loss_fn,
                           plugins=[AccuracyCurve(model, train_eval, test_eval, run.curve)])
        begin = time.perf_counter()
        with seeded_rng(seed, device):  # dropout (SoftHebb's readout): the same on every call
            outcome = trainer(model, ctx)
        seconds = time.perf_counter() - begin
        run.metrics.update(outcome.metrics)
        run.alignment = outcome.alignment
        notes.extend(outcome.notes)
        model.eval()
        run.metrics.update({"test_acc": accuracy(model, test_eval), "train_acc": accuracy(model, train_eval),
                            "seconds": seconds})
        if robust_eval is not None:
            run.robustness = robustness(model, robust_eval, bounds=bounds, seed=seed,
                                        progress=bar(f"{name.replace('_', ' ')} robustness"))
            run.metrics.update({k: v for k, v in run.robustness.metrics().items() if k != "robust.clean"})
            run.metrics["robust.samples"] = float(len(robust_eval.dataset))  # type: ignore[arg-type]
            notes.extend(f"{name}: {note}" for note in masking_warnings(run.robustness))
        runs[name] = run

    train(rule, method.train, warm_up=True)
    baseline_name, controls = None, method.controls()
    if compare and not entry.baseline:
        # the baseline (backprop) of the same architecture on the same batches, then the
        # method's controls
        baseline = next(e for e in registry.available("learn") if e.baseline)
        twin: LearnMethod = baseline.cls()
        baseline_name = baseline.name
        train(baseline.name, twin.train, size=method.twin_batch_size or batch_size,
              loss_fn=method.twin_loss())
        for name, control in controls.items():
            train(name, control)
    return LearnResult(rule=rule, runs=runs, notes=notes, curve_note=method.curve_note,
                       baseline=baseline_name, controls=tuple(controls) if baseline_name else ())
