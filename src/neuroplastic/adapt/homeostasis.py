"""Homeostatic plasticity: a learning rate regulated by need under concept shift, and
adaptive gain control that whitens each context.

- :class:`ConceptShiftStream`: any classification data as a stream of mini-batches in which
  two random classes swap labels ``swaps`` times per epoch, evenly spaced (the reference's
  ``swap_labels``, applied to every later label, test labels included).
- :func:`train_shift` with ``homeostatic`` (Man, Damasio & Neven 2022, arXiv 2205.08645;
  reference ``kingsonman/homeostatic-neural-networks``, ``lrh.py``): classes in the upper
  half are "excitatory", the lower half "inhibitory". Once per mini-batch (the reference's
  check falls on the first sample i of each batch of 10, from i > 20 in every epoch), the
  learner simulates one SGD step on that sample's gradient at the current rate and at the
  rate its *predicted* label would imply (+-eta0/10), scores both on the 20 samples before
  it in this epoch; if the change scores better, the rate moves by the sample's *true*
  label; a negative rate becomes 1e-8. eta0 = 1e-3 by default, as ``lrh.py``.
  ``random-lr`` (``lrr.py``): at every batch but an epoch's first, the same move with
  probability 1/2, no simulation; ``constant``: no move. Updates are SGD on the batch-mean
  cross-entropy. One deviation: each epoch visits the samples in a new random order (the
  reference walks the file in order).
- :class:`GainControl` (Duong, Lipshutz et al., ICML 2023, arXiv 2301.11955): ``y = (I + W
  diag(g) W^T)^-1 x`` on a fixed overcomplete unit-norm frame ``W``; the gains follow
  ``g += eta * mean(z^2 - 1)`` with ``z = W^T y``, which whitens the outputs of each context.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call
from torch.utils.data import TensorDataset

from neuroplastic import loop, registry
from neuroplastic.adapt.rates import LearningRateRule, RateContext
from neuroplastic.batches import model_device
from neuroplastic.checks import require_in, require_positive
from neuroplastic.errors import NeuroplasticError
from neuroplastic.loop import Plugin, ProgressFn

SHIFT_METHODS = ("homeostatic", "constant", "random-lr")
"""The built-in shift rules in the order tables show them (each is registered, kind ``shift``)."""


class ConceptShiftStream:
    """Mini-batches of ``dataset`` over ``epochs``, with two classes swapping labels
    ``swaps`` times per epoch (never at the first batch).

    ``mapping`` is the current label map (``mapping[y]`` is what a sample of class y is
    now called); ``swap_steps`` lists the batches after which a swap happened."""

    def __init__(self, dataset: TensorDataset, *, swaps: int, epochs: int, batch_size: int = 10,
                 seed: int = 0) -> None:
        self.x, self.y = dataset.tensors[0], dataset.tensors[1]
        self.classes = int(self.y.max()) + 1
        if self.classes < 2:
            raise NeuroplasticError("a concept-shift stream needs at least two classes")
        self.swaps = int(require_in("swaps", swaps, 0, math.inf))
        self.epochs = int(require_positive("epochs", epochs))
        self.batch_size = int(require_positive("batch_size", batch_size))
        self.per_epoch = len(self.y) // self.batch_size
        if self.swaps > self.per_epoch:
            raise NeuroplasticError(f"--swaps {swaps} exceeds the {self.per_epoch} batches of an epoch")
        self.generator = torch.Generator().manual_seed(seed)
        self.mapping = torch.arange(self.classes)
        self.swap_steps: list[int] = []

    def __len__(self) -> int:
        return self.per_epoch * self.epochs

    def swap(self) -> tuple[int, int]:
        a, b = torch.randperm(self.classes, generator=self.generator)[:2].tolist()
        old = self.mapping.clone()
        self.mapping[old == a] = b
        self.mapping[old == b] = a
        return a, b

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        step = 0
        interval = self.per_epoch // self.swaps if self.swaps else 0
        for _ in range(self.epochs):
            order = torch.randperm(len(self.y), generator=self.generator)
            for j in range(self.per_epoch):
                rows = order[j * self.batch_size:(j + 1) * self.batch_size]
                yield self.x[rows], self.mapping[self.y[rows]]
                step += 1
                if interval and j != 0 and (j + 1) % interval == 0:  # as the reference: never after batch 0
                    self.swap()
                    self.swap_steps.append(step)


@dataclass
class ShiftResult:
    """What one run over a concept-shift stream measured."""

    online_acc: list[float] = field(default_factory=list)  # per batch, predicted before the update
    test_acc: list[tuple[int, float]] = field(default_factory=list)  # (step, test accuracy now)
    lr: list[float] = field(default_factory=list)  # per batch
    swap_steps: list[int] = field(default_factory=list)
    seconds: float = 0.0

    def recovery_window(self, longest: int = 20) -> int:
        """``longest`` batches, or half the smallest spacing of swaps when they come closer
        (a window reaching the next swap would just be the online accuracy)."""
        steps = self.swap_steps
        gaps = [b - a for a, b in itertools.pairwise(steps)]
        return max(1, min([longest, *(g // 2 for g in gaps)]))

    def recovery(self, window: int | None = None) -> float:
        """Mean online accuracy over the ``window`` batches after each swap (default
        :meth:`recovery_window`; higher: faster recovery); NaN without swaps."""
        window = window or self.recovery_window()
        spans = [self.online_acc[s:s + window] for s in self.swap_steps if s < len(self.online_acc)]
        values = [v for span in spans for v in span]
        return sum(values) / len(values) if values else float("nan")

    def metrics(self) -> dict[str, float]:
        tail = self.online_acc[-max(1, len(self.online_acc) // 10):]
        return {"online_acc": sum(self.online_acc) / max(1, len(self.online_acc)),
                "online_acc_last_10pct": sum(tail) / len(tail),
                "final_test_acc": self.test_acc[-1][1] if self.test_acc else float("nan"),
                "recovery_acc": self.recovery(), "recovery_window": float(self.recovery_window()),
                "lr_final": self.lr[-1] if self.lr else float("nan"),
                "swaps": float(len(self.swap_steps)), "seconds": self.seconds}


def shift_warnings(results: dict[str, ShiftResult], method: str) -> list[str]:
    """A sentence when a rule that claims faster recovery (``claims_recovery``, the homeostatic
    rate) recovered more slowly after swaps than the baseline (constant) rate run beside it."""
    notes = []
    baselines = [e.name for e in registry.available("shift") if e.baseline and e.name in results]
    if registry.get(method, kind="shift").claims_recovery and baselines:
        mine, base = results[method].recovery(), results[baselines[0]].recovery()
        if mine < base:  # NaN (no swaps) compares False
            notes.append(f"the {method} learning rate recovered more slowly after swaps than a "
                         f"{baselines[0]} one (accuracy over the batches after each swap {mine:.3f} vs "
                         f"{base:.3f})")
    return notes


def shift_mlp(in_features: int, num_classes: int) -> nn.Module:
    """The reference's network: inputs-80-60-classes, ELU."""
    return nn.Sequential(nn.Flatten(), nn.Linear(in_features, 80), nn.ELU(), nn.Linear(80, 60), nn.ELU(),
                         nn.Linear(60, num_classes))


class _ShiftRates(Plugin):
    """The loop plugin of :func:`train_shift`: before each step it scores the batch as the
    model predicts it now (online accuracy), asks the rule for the batch's rate and sets it
    on the optimizer; after the step it records the rate, remembers the batch and scores the
    test set when due."""

    def __init__(self, stream: ConceptShiftStream, rule: LearningRateRule, optimizer: torch.optim.Optimizer,
                 *, eta0: float, memory: int, test: TensorDataset | None, every: int, seed: int) -> None:
        self.stream, self.rule, self.optimizer = stream, rule, optimizer
        self.eta, self.step_size, self.memory = eta0, eta0 / 10, memory
        self.test, self.every = test, every
        self.generator = torch.Generator().manual_seed(seed)
        self.recent_x: list[Tensor] = []
        self.recent_i: list[int] = []  # original class of each remembered sample (relabelled on swaps)
        self.result = ShiftResult()
        self._batch: tuple[Tensor, Tensor] | None = None

    def batch_loss(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        stream, memory = self.stream, self.memory
        step = len(self.result.online_acc) + 1
        first_index = ((step - 1) % stream.per_epoch) * stream.batch_size  # in this epoch, as i
        if first_index == 0:
            self.recent_x, self.recent_i = [], []  # the reference remembers this epoch's samples only
        with torch.no_grad():
            self.result.online_acc.append(float((model(x).argmax(-1) == y).float().mean()))
        first_x, first_y = x[:1], y[:1]
        half, eta = stream.classes / 2, self.eta
        recent_x, recent_i = self.recent_x, self.recent_i

        def predicted_upper() -> bool:
            return int(model(first_x).argmax(-1)) >= half

        def scores_better(proposed: float) -> bool:
            memo_x = torch.cat(recent_x[-memory:])
            memo_y = stream.mapping.to(x.device)[torch.tensor(recent_i[-memory:], device=x.device)]
            params = dict(model.named_parameters())
            loss = F.cross_entropy(model(first_x), first_y)
            grads = dict(zip(params, torch.autograd.grad(loss, list(params.values())), strict=True))
            scored = [simulated_accuracy(model, grads, rate / stream.batch_size, memo_x, memo_y)
                      for rate in (proposed, eta)]
            return scored[0] > scored[1]

        self.eta = self.rule.next_rate(RateContext(
            eta=eta, step_size=self.step_size, index_in_epoch=first_index, memory=memory,
            true_upper=int(first_y) >= half, predicted_upper=predicted_upper,
            scores_better=scores_better, generator=self.generator))
        for group in self.optimizer.param_groups:
            group["lr"] = self.eta
        self._batch = (x, y)
        return F.cross_entropy(model(x), y)

    def after_step(self, model: nn.Module, step: int) -> None:
        assert self._batch is not None
        x, y = self._batch
        self.result.lr.append(self.eta)
        inverse = torch.argsort(self.stream.mapping).to(x.device)  # label now -> original class
        self.recent_x.extend(x.split(1))
        self.recent_i.extend(inverse[y].tolist())
        del self.recent_x[:-self.memory], self.recent_i[:-self.memory]
        if self.test is not None and (step % self.every == 0 or step == len(self.stream)):
            self.result.test_acc.append((step, shift_accuracy(model, self.test, self.stream.mapping)))
            model.train()  # shift_accuracy restores the mode; the loop trains on


def train_shift(model: nn.Module, stream: ConceptShiftStream, *, method: str = "homeostatic",
                lr: float = 1e-3, test: TensorDataset | None = None, memory: int = 20,
                evaluate_every: int = 0, seed: int = 0, params: dict[str, object] | None = None,
                progress: ProgressFn | None = None) -> ShiftResult:
    """Train ``model`` online on ``stream`` by SGD with the learning rate of ``method`` (a
    registered ``shift`` rule, see the module docstring), on :func:`neuroplastic.loop.fit`;
    ``lr`` is the starting rate eta0 (the reference's 1e-3), moves are eta0 / 10.

    Args:
        test: scored under the stream's current label map every ``evaluate_every`` batches
            (0: once per epoch) and at the end.
        memory: how many recent samples score the homeostatic simulations (the reference's 20).
        params: the rule's own hyperparameters (the built-in rules have none).
    """
    import time

    rule = registry.create(method, kind="shift", **(params or {}))  # an unknown name: one line
    eta0 = require_positive("lr", lr)
    optimizer = torch.optim.SGD(model.parameters(), lr=eta0)  # w <- w - eta g, the reference's step
    rates = _ShiftRates(stream, rule, optimizer, eta0=eta0, memory=memory, test=test,
                        every=evaluate_every or stream.per_epoch, seed=seed)
    begin = time.perf_counter()
    # shard=False: the rule reads each batch whole and in order, so under torchrun every rank
    # runs the whole stream (one process's result, no speed-up)
    loop.fit(model, stream, optimizer=optimizer, epochs=1, batch_loss=rates.batch_loss, plugins=[rates],
             progress=progress, shard=False)
    rates.result.swap_steps = list(stream.swap_steps)
    rates.result.seconds = time.perf_counter() - begin
    return rates.result


@torch.no_grad()
def simulated_accuracy(model: nn.Module, grads: dict[str, Tensor], step: float, x: Tensor,
                       y: Tensor) -> float:
    """Accuracy on ``(x, y)`` of the model after a simulated SGD step ``-step * grads``
    (the model itself is not changed)."""
    moved = {k: p.detach() - step * grads[k] for k, p in model.named_parameters()}
    return float((functional_call(model, moved, (x,)).argmax(-1) == y).float().mean())


@torch.no_grad()
def shift_accuracy(model: nn.Module, data: TensorDataset, mapping: Tensor) -> float:
    """Accuracy on ``data`` with labels relabelled by ``mapping``."""
    device = model_device(model)
    x, y = data.tensors[0].to(device), mapping.to(device)[data.tensors[1].to(device)]
    was = model.training
    model.eval()
    correct = int((model(x).argmax(-1) == y).sum())
    model.train(was)
    return correct / len(y)


class GainControl(nn.Module):
    """Adaptive gain control on a fixed overcomplete frame (Duong, Lipshutz et al., ICML 2023).

    Args:
        features: input dimension N.
        frame_size: K frame vectors (default N(N+1)/2, the count that can whiten any context).
        eta: gain learning rate (the reference's 5e-3).
    """

    def __init__(self, features: int, *, frame_size: int | None = None, eta: float = 5e-3,
                 seed: int = 0) -> None:
        super().__init__()
        k = frame_size or features * (features + 1) // 2
        generator = torch.Generator().manual_seed(seed)
        frame = torch.randn(features, k, generator=generator)
        self.register_buffer("frame", frame / frame.norm(dim=0, keepdim=True))
        self.register_buffer("gains", torch.zeros(k))
        self.eta = require_positive("eta", eta)

    def forward(self, x: Tensor) -> Tensor:
        """Whitened responses ``y`` (batch, N)."""
        n = self.frame.shape[0]
        matrix = torch.eye(n, dtype=x.dtype, device=x.device) + (self.frame * self.gains) @ self.frame.T
        return torch.linalg.solve(matrix, x.T).T

    @torch.no_grad()
    def update_(self, x: Tensor) -> Tensor:
        """One gain step on a batch of one context; returns its responses before the step."""
        y = self(x)
        z = y @ self.frame
        self.gains += self.eta * (z.pow(2).mean(0) - 1)
        return y
