"""One call that trains a network with a local rule and, beside it, the same architecture by
backprop, then measures both the same way (accuracy, robustness, alignment): what
``neuroplastic learn`` and ``benchmarks/local.py`` run."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from neuroplastic import loop, registry
from neuroplastic.checks import require_choice
from neuroplastic.data.splits import DataSplit, loader
from neuroplastic.errors import NeuroplasticError
from neuroplastic.evaluate.outputs import accuracy
from neuroplastic.evaluate.robustness import Robustness, masking_warnings, robustness
from neuroplastic.loop import Plugin, ProgressFn
from neuroplastic.models.factory import seeded_model
from neuroplastic.runs import merge_runs

RULES = ("disinhibitory", "softhebb", "biprop", "halfbiprop", "han", "backprop")


@dataclass(frozen=True)
class RuleDefaults:
    """What ``neuroplastic learn`` uses when an option is not given."""

    hidden: tuple[int, ...]
    epochs: int
    lr: float
    batch_size: int


DEFAULTS = {
    # the reference's Adam 1e-3 undertrains on digits (shared/LOCAL.md); 5e-3 as in the demo
    "disinhibitory": RuleDefaults((64, 64), 30, 5e-3, 100),
    # epochs = readout epochs (the Hebbian phase has its own, 5); batch = Hebbian batch (10)
    "softhebb": RuleDefaults((32,), 50, 1e-3, 10),
    # the reference: 784-16-10, Adam 0.003, batch 100
    "biprop": RuleDefaults((16,), 100, 3e-3, 100),
    "halfbiprop": RuleDefaults((16,), 100, 3e-3, 100),
    "han": RuleDefaults((16,), 100, 3e-3, 100),
    "backprop": RuleDefaults((64, 64), 30, 1e-3, 64),
}


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


def build_network(rule: str, split: DataSplit, hidden: tuple[int, ...], *,
                  t_invert: float = 1.0) -> nn.Module:
    """The architecture each rule trains (its backprop twin is the same); ``t_invert`` is
    SoftHebb's competition."""
    from neuroplastic.local.disinhibitory import DisinhibitoryMLP
    from neuroplastic.local.softhebb import softhebb_mlp

    features, classes = math.prod(split.input_shape), split.num_classes
    if rule == "disinhibitory":
        return DisinhibitoryMLP(features, classes, hidden=hidden)
    if rule == "softhebb":
        if len(hidden) != 1:
            raise NeuroplasticError("softhebb's default network has one Hebbian layer: "
                                    "give one --hidden width")
        return softhebb_mlp(features, classes, width=hidden[0], t_invert=t_invert)
    activation = nn.ReLU if rule == "backprop" else nn.Sigmoid  # biprop's reference: sigmoid
    layers: list[nn.Module] = [nn.Flatten()]
    width = features
    for size in hidden:
        layers += [nn.Linear(width, size), activation()]
        width = size
    layers.append(nn.Linear(width, classes))
    return nn.Sequential(*layers)


def learn(rule: str, split: DataSplit, *, hidden: tuple[int, ...] | None = None, epochs: int | None = None,
          lr: float | None = None, batch_size: int | None = None, seed: int = 0,
          params: dict[str, Any] | None = None, compare: bool = True, device: str = "cpu",
          factory: Callable[[], nn.Module] | None = None, measure_robustness: bool = True,
          progress: Callable[[str], ProgressFn | None] | None = None) -> LearnResult:
    """Train with ``rule`` (and, with ``compare``, the same architecture by backprop), then
    measure train/test accuracy per epoch, robustness, and for dis-inhibitory control the
    alignment of its updates with backprop's gradients.

    Args:
        rule: one of :data:`RULES`.
        split: the data (classification); the test split is only measured, never trained on.
        hidden, epochs, lr, batch_size: ``None`` takes :data:`DEFAULTS`.
        params: the rule's own hyperparameters (see each rule's docstring).
        factory: builds the classifier instead of :func:`build_network` (biprop, halfbiprop,
            han and backprop only: the other rules need their own layer types).
        progress: ``progress(label)`` returns a ``progress(done, total)`` callback or None.
    """
    require_choice("rule", rule, RULES)
    base = DEFAULTS[rule]
    hidden = hidden or base.hidden
    epochs = epochs or base.epochs
    lr = lr or base.lr
    batch_size = batch_size or base.batch_size
    params = dict(params or {})
    if factory is not None and rule in ("disinhibitory", "softhebb"):
        raise NeuroplasticError(f"{rule} trains its own network type (E/I pairs, Hebbian blocks); "
                                "--model-factory applies to biprop, halfbiprop, han and backprop")
    hebbian_epochs = float(params.pop("hebbian_epochs", 5)) if rule == "softhebb" else 0.0
    t_invert = float(params.pop("t_invert", 1.0)) if rule == "softhebb" else 1.0
    make = factory or (lambda: build_network(rule, split, hidden, t_invert=t_invert))
    def batches(size: int = batch_size) -> DataLoader:
        """A fresh shuffling loader per run: every network sees the same batch order."""
        return loader(split.train, batch_size=size, shuffle=True, seed=seed)

    example = split.train.tensors[0][:2].to(device)
    train_eval, test_eval = loader(split.train, batch_size=512), loader(split.test, batch_size=512)
    bounds = input_bounds(split)
    notes: list[str] = []
    runs: dict[str, Trained] = {}
    bar = progress or (lambda label: None)

    def finish(name: str, run: Trained, seconds: float) -> None:
        run.model.eval()
        run.metrics.update({"test_acc": accuracy(run.model, test_eval),
                            "train_acc": accuracy(run.model, train_eval), "seconds": seconds})
        if measure_robustness:
            run.robustness = robustness(run.model, test_eval, bounds=bounds, seed=seed)
            run.metrics.update({k: v for k, v in run.robustness.metrics().items() if k != "robust.clean"})
            notes.extend(f"{name}: {note}" for note in masking_warnings(run.robustness))
        runs[name] = run

    # --- the rule ---
    model = seeded_model(make, seed, device)
    loop.warm_up(model, example, split.train.tensors[1][:2].to(device))  # not in the rule's seconds
    run = Trained(model)
    curve = AccuracyCurve(model, train_eval, test_eval, run.curve)
    begin = time.perf_counter()
    if rule == "disinhibitory":
        from neuroplastic.local.disinhibitory import AlignmentLog

        instance = registry.create(rule, kind="learn", **params)
        probe = next(iter(loader(split.val, batch_size=256)))
        log = AlignmentLog(instance, (probe[0].to(device), probe[1].to(device)), run.alignment)
        optimizer = torch.optim.Adam(model.parameters(), lr=lr)
        loop.fit(model, batches(), optimizer=optimizer, epochs=epochs, batch_grads=instance.batch_grads,
                 plugins=[log, curve], progress=bar(rule))
        for layer, (cosine, sign) in run.alignment[-1].items():
            name = layer.removesuffix(".weight")
            run.metrics[f"alignment.{name}"] = cosine
            run.metrics[f"alignment.{name}.sign"] = sign
        run.metrics.update(instance.stats.to_metrics())
        if instance.stats.unconverged:
            notes.append(f"the closed loop did not reach steady state within the horizon "
                         f"({instance.horizon:g} s) in {instance.stats.unconverged} of "
                         f"{instance.stats.solves} "
                         f"batches (largest residual {instance.stats.worst_residual:.3g} x the tolerance): "
                         "those updates rest on unsettled states; raise --param horizon=... or dt")
    elif rule == "softhebb":
        from neuroplastic.local.softhebb import train_softhebb, weight_norms

        phases = train_softhebb(model, batches(), hebbian_epochs=hebbian_epochs, readout_epochs=epochs,
                                readout_lr=lr, seed=seed, plugins=[curve], progress=bar(rule), **params)
        norms = weight_norms(model)
        run.metrics.update({**phases, "weight_norm.mean": float(norms.mean()),
                            "weight_norm.max_deviation": float((norms - 1).abs().max())})
    elif rule in ("biprop", "halfbiprop", "han"):
        instance = registry.create(rule, kind="learn", **params)
        instance.fit(model, batches(), num_classes=split.num_classes, epochs=epochs, lr=lr,
                     progress=bar(rule), plugins=(curve,), example=example)
    else:
        if params:
            raise NeuroplasticError("backprop takes no --param")
        optimizer = torch.optim.Adam(model.parameters(), lr=lr)
        loop.fit(model, batches(), optimizer=optimizer, epochs=epochs, plugins=[curve], progress=bar(rule))
    finish(rule, run, time.perf_counter() - begin)

    # --- backprop of the same architecture (and SoftHebb's random-features control) ---
    if compare and rule != "backprop":
        twin = seeded_model(make, seed, device)
        run = Trained(twin)
        curve = AccuracyCurve(twin, train_eval, test_eval, run.curve)
        begin = time.perf_counter()
        loss_fn = None
        if rule == "disinhibitory":
            rule_loss = registry.create(rule, kind="learn", **params)
            loss_fn = lambda out, y: rule_loss.loss(out, rule_loss.targets(y, out.shape[-1]))  # noqa: E731
        bp_batches = batches(64 if rule == "softhebb" else batch_size)
        optimizer = torch.optim.Adam(twin.parameters(), lr=lr)
        loop.fit(twin, bp_batches, optimizer=optimizer, epochs=epochs, loss_fn=loss_fn, plugins=[curve],
                 progress=bar("backprop"))
        finish("backprop", run, time.perf_counter() - begin)
        if rule == "softhebb":
            from neuroplastic.local.softhebb import train_softhebb

            control = seeded_model(make, seed, device)
            run = Trained(control)
            curve = AccuracyCurve(control, train_eval, test_eval, run.curve)
            begin = time.perf_counter()
            train_softhebb(control, batches(), hebbian=False, readout_epochs=epochs, readout_lr=lr, seed=seed,
                           plugins=[curve], progress=bar("random features"))
            finish("random_features", run, time.perf_counter() - begin)
    return LearnResult(rule=rule, runs=runs, notes=notes)
