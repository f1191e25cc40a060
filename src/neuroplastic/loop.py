"""The one training loop every pillar trains with, and the events methods plug into.

``fit(model, data, optimizer=..., epochs=..., plugins=...)`` runs epochs of
zero_grad -> forward -> loss -> backward -> step, and calls each plugin at
named events with explicit arguments (in the style of Avalanche's plugin
events, without its strategy object):

- ``before_task(model, task)`` once before training;
- ``loss(model, x, y, loss) -> loss`` to add a penalty (EWC, SI, L1);
- ``after_backward(model)`` to mask, scale or project gradients (GPM, HLOP,
  CLNP's freeze, gradient clipping);
- ``after_step(model, step)`` after ``optimizer.step()`` (a sparsifier's mask
  update, SI's path integral, a learning-rate schedule);
- ``after_epoch(model, epoch)`` (validation, a checkpoint);
- ``should_stop(step) -> bool`` after every step;
- ``after_task(model, task)`` once after training (consolidation).

A plugin implements only the events it needs (a :class:`Plugin` subclass, or
any object with some of these methods). The library prints nothing: pass
``progress(done, total)`` to see progress (the CLI renders it with rich).

In a process group (torchrun), every rank runs the same loop on the same global batches
and works on its own contiguous part of each (:mod:`neuroplastic.distributed`); the
gradients are all-reduced as the full batch's mean before any ``after_backward`` plugin
sees them, so N processes step exactly as one does. A model wrapped in
``DistributedDataParallel`` is accepted (DDP then reduces the gradients; plugins receive
the module inside it).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from neuroplastic import distributed
from neuroplastic.batches import iter_batches, model_device
from neuroplastic.errors import NeuroplasticError
from neuroplastic.losses import cross_entropy
from neuroplastic.sharded import has_sharded_parameters
from neuroplastic.types import Data, LossFn

ProgressFn = Callable[[int, int | None], None]
"""``progress(steps done, total steps or None)``."""

BatchLoss = Callable[[nn.Module, Tensor, Tensor], Tensor]
"""``batch_loss(model, x, y)``: a whole loss computation (forward included)."""

Units = Callable[[Tensor], "Tensor | int"]
"""``units(y)``: how many things a loss averages over in a batch with labels ``y`` (tokens)."""

BatchGrads = Callable[[nn.Module, Tensor, Tensor], Tensor]
"""``batch_grads(model, x, y)``: fills the parameters' ``.grad`` itself (a local learning
rule's pseudo-gradient, no backward pass) and returns a scalar to report as the loss."""

EVENTS = ("before_task", "loss", "after_backward", "after_step", "after_epoch", "should_stop",
          "after_task")


class Plugin:
    """Base class of loop plugins: every event does nothing. Override the ones you need."""

    def before_task(self, model: nn.Module, task: Any) -> None:
        """Called once before training on ``task`` (an index or an experience)."""

    def loss(self, model: nn.Module, x: Tensor, y: Tensor, loss: Tensor) -> Tensor:
        """Return the loss to minimise for this batch (add a penalty here)."""
        return loss

    def after_backward(self, model: nn.Module) -> None:
        """Gradients are in ``.grad``; the optimizer has not stepped yet."""

    def after_step(self, model: nn.Module, step: int) -> None:
        """The optimizer stepped; ``step`` counts from 1 within this call of ``fit``."""

    def after_epoch(self, model: nn.Module, epoch: int) -> None:
        """An epoch ended; ``epoch`` counts from 1 (continuing after ``start_epoch``)."""

    def should_stop(self, step: int) -> bool:
        """True ends training after this step."""
        return False

    def after_task(self, model: nn.Module, task: Any) -> None:
        """Called once after training on ``task`` (also after an early stop)."""


@dataclass
class FitResult:
    """What one call of :func:`fit` did."""

    steps: int
    epochs: int
    seconds: float
    stopped_early: bool
    step_seconds: list[float] = field(default_factory=list)  # wall time of every step
    last_loss: float = float("nan")


def _handlers(plugins: Sequence[Any], event: str) -> list[Callable[..., Any]]:
    """The plugins' methods for ``event``, skipping the do-nothing defaults of :class:`Plugin`."""
    found = []
    for plugin in plugins:
        method = getattr(plugin, event, None)
        if method is None:
            continue
        if getattr(type(plugin), event, None) is getattr(Plugin, event):
            continue
        found.append(method)
    return found


def fit(model: nn.Module, data: Data, *, optimizer: torch.optim.Optimizer, epochs: float,
        loss_fn: LossFn | None = None, batch_loss: BatchLoss | None = None,
        batch_grads: BatchGrads | None = None, plugins: Iterable[Any] = (),
        progress: ProgressFn | None = None, task: Any = 0,
        start_epoch: int = 0, time_steps: bool = False, shard: bool = True,
        units: Units | None = None) -> FitResult:
    """Train ``model`` in place on ``data`` (re-iterable ``(x, ..., y)`` batches).

    Args:
        optimizer: steps once per batch.
        epochs: passes over ``data``; a fractional value stops mid-pass (needs ``len(data)``).
        loss_fn: ``loss_fn(model(x), y)`` (default: batch-mean cross-entropy on the logits).
        batch_loss: ``batch_loss(model, x, y)`` replaces the forward and ``loss_fn``
            (for losses that need several forwards, e.g. NegGrad+).
        batch_grads: ``batch_grads(model, x, y)`` replaces forward, loss and backward: it
            writes the update direction into ``.grad`` (local rules); ``loss`` plugins do not
            apply, ``after_backward`` plugins (gradient masks, projections) do.
        plugins: objects with some of the events named in the module docstring.
        progress: ``progress(done, total)`` after every step.
        task: what ``before_task`` / ``after_task`` receive (a task index, or the task's
            :class:`~neuroplastic.data.streams.Experience` in continual learning).
        start_epoch: epochs already done (a resumed run): training runs epochs
            ``start_epoch + 1 .. epochs``.
        time_steps: record every step's wall time in ``FitResult.step_seconds``.
        shard: in a process group, each rank trains on its part of every batch (the default);
            False: every rank trains on whole batches, as one process (for rules that read
            a batch as a whole and in order, such as the homeostatic learning rate).
        units: ``units(y)``, what the loss averages over in a batch with labels ``y``, when
            that is not its rows (default: ``loss_fn.units`` if the loss function has it, as
            :func:`~neuroplastic.skills.lm.causal_lm_loss` has, else rows). In a process
            group each rank's part of the batch is weighted by its share of the units, so a
            loss averaged over tokens gives the whole batch's mean gradient.

    Returns:
        A :class:`FitResult`; the model is left in eval mode.
    """
    if not epochs >= 0:
        raise NeuroplasticError(f"epochs must be >= 0, got {epochs}")
    plugins = list(plugins)
    on = {event: _handlers(plugins, event) for event in EVENTS}
    if batch_grads is not None and (batch_loss is not None or on["loss"]):
        raise NeuroplasticError("batch_grads replaces the loss: it cannot be combined with "
                                "batch_loss or a plugin's loss event")
    loss_fn = loss_fn or cross_entropy
    per_epoch = len(data) if hasattr(data, "__len__") else None  # type: ignore[arg-type]
    fractional = not float(epochs).is_integer()
    if fractional and per_epoch is None:
        raise NeuroplasticError("fractional epochs need data with a length")
    budget = None if per_epoch is None else round((epochs - start_epoch) * per_epoch)
    if budget is not None and fractional:
        budget = max(1, budget)
    total = budget
    device = model_device(model)
    units = units or getattr(loss_fn, "units", None)
    group = _Group(model, data, reduce_locally=batch_grads is not None, shard=shard, units=units)
    inner = group.inner  # what plugins and batch_grads receive: the module inside a DDP wrapper
    steps, done_epochs, stopped, last = 0, start_epoch, False, float("nan")
    durations: list[float] = []
    begin = time.perf_counter()
    for handler in on["before_task"]:
        handler(inner, task)
    model.train()
    for epoch in range(start_epoch, int(epochs) + (1 if fractional else 0)):
        for x, y in _batches(data, device):
            if budget is not None and steps >= budget:
                break
            started = time.perf_counter() if time_steps else 0.0
            x, y = group.part(x, y)
            optimizer.zero_grad(set_to_none=True)
            if batch_grads is not None:  # also on an empty part: a rule may all-reduce inside
                loss = batch_grads(inner, x, y)
            elif group.empty(x):  # a batch smaller than the group: this rank has no part of it
                loss = torch.zeros((), device=device)
            else:
                loss = batch_loss(model, x, y) if batch_loss else loss_fn(model(x), y)
                for handler in on["loss"]:
                    loss = handler(inner, x, y, loss)
                group.scaled(loss).backward()
            group.reduce_gradients()
            for handler in on["after_backward"]:
                handler(inner)
            optimizer.step()
            group.after_step()
            steps += 1
            for handler in on["after_step"]:
                handler(inner, steps)
            if time_steps:
                durations.append(time.perf_counter() - started)
            if progress is not None:
                progress(steps, total)
            if on["should_stop"] and group.any(any(handler(steps) for handler in on["should_stop"])):
                stopped = True
                last = group.batch_mean(float(loss.detach()))
                break
        if stopped:
            break
        done_epochs = epoch + 1
        if budget is None or steps < budget or not fractional:
            for handler in on["after_epoch"]:
                handler(inner, done_epochs)
            model.train()  # an after_epoch validation may have switched modes
            if on["should_stop"] and group.any(any(handler(steps) for handler in on["should_stop"])):
                stopped = True
                break
    if steps and last != last:
        last = group.batch_mean(float(loss.detach()))  # type: ignore[possibly-undefined]
    for handler in on["after_task"]:
        handler(inner, task)
    model.eval()
    return FitResult(steps=steps, epochs=done_epochs, seconds=time.perf_counter() - begin,
                     stopped_early=stopped, step_seconds=durations, last_loss=last)


class _Group:
    """What :func:`fit` does differently in a process group (nothing in one process): each
    rank takes its contiguous part of every global batch (unless the data is already a
    per-rank ``DataLoader`` with a ``DistributedSampler``), the gradients become the full
    batch's mean (all-reduced here, or by a ``DistributedDataParallel`` wrapper with the loss
    scaled to make its plain average that mean), floating buffers (BatchNorm's running
    statistics) are averaged after every step, and a stop anywhere stops every rank."""

    def __init__(self, model: nn.Module, data: Data, *, reduce_locally: bool, shard: bool,
                 units: Units | None = None) -> None:
        self.units = units
        self.sharded = has_sharded_parameters(model)  # FSDP2: it reduce-scatters the gradients
        self.wrapped = isinstance(model, DistributedDataParallel) or self.sharded
        self.inner: nn.Module = model.module if isinstance(model, DistributedDataParallel) else model
        self.active = distributed.is_distributed() and shard
        self.world = distributed.world_size()
        self.presharded = self.active and distributed.is_rank_part(data)
        if self.active and self.sharded and reduce_locally:
            raise NeuroplasticError("a local learning rule (batch_grads) cannot train an FSDP-sharded "
                                    "model: its updates are reduced here, FSDP's in the backward pass")
        self.reduce_here = self.active and (reduce_locally or not self.wrapped)
        self.params = [p for p in self.inner.parameters() if p.requires_grad]
        self.buffers = [b for b in self.inner.buffers() if b.is_floating_point()]
        self.weight = 1.0
        if self.active and not self.wrapped:
            distributed.broadcast_module_(self.inner)  # every rank starts from rank 0's weights

    def part(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """This rank's part of a global batch; remembers its share of the batch."""
        if not self.active:
            return x, y
        if self.presharded:
            self.weight = 1.0 / self.world
            distributed.set_batch_share(self.weight)
            return x, y
        n = x.shape[0]
        whole = y
        x, y = distributed.shard(x), distributed.shard(y)
        self.weight = x.shape[0] / n
        if self.units is not None:
            total = float(self.units(whole))
            if total > 0:  # no unit anywhere: the loss is undefined, rows are as good
                self.weight = float(self.units(y)) / total
        # a gradient captured in a backward hook: under DDP the loss is already scaled by
        # world * n_r / n, so its plain average over the ranks is the batch's mean
        distributed.set_batch_share(1.0 / self.world if self.wrapped else self.weight)
        if self.wrapped and x.shape[0] == 0:
            raise NeuroplasticError(f"a batch of {n} examples cannot be split over {self.world} "
                                    "processes of a DistributedDataParallel or FSDP model: use batches of "
                                    "at least that many")
        return x, y

    def empty(self, x: Tensor) -> bool:
        return self.active and x.shape[0] == 0

    def scaled(self, loss: Tensor) -> Tensor:
        """DDP averages the ranks' gradients; scaled by ``world * n_r / n`` the average is
        the full batch's mean."""
        return loss * (self.weight * self.world) if self.active and self.wrapped else loss

    def reduce_gradients(self) -> None:
        if self.reduce_here:
            distributed.all_reduce_gradients_(self.params, self.weight)

    def after_step(self) -> None:
        if self.active and self.buffers:
            distributed.average_(self.buffers)

    def any(self, flag: bool) -> bool:
        return distributed.any_process(flag) if self.active else flag

    def batch_mean(self, value: float) -> float:
        """A per-rank batch mean as the full batch's mean."""
        return distributed.all_reduce_sum(value * self.weight) if self.active else value


def _batches(data: Data, device: torch.device) -> Iterable[tuple[Tensor, Tensor]]:
    """``(x, y)`` of every batch on ``device``, the first one checked in full (form, sizes,
    finite inputs) by :func:`~neuroplastic.batches.iter_batches`; later ones only moved, so
    the loop costs what a hand-written one does (benchmarks/loop.py). A NaN in a later
    batch shows as a NaN loss, not an error."""
    first = True
    for batch in data:
        if first:
            checked = list(iter_batches([batch], device=device, name="training"))
            if not checked:  # an empty batch: nothing to train on
                continue
            (x, y), first = checked[0], False
        else:
            x, y = batch[0], batch[-1]
            if x.device != device:
                x, y = x.to(device), y.to(device)
        yield x, y


class StopWhen(Plugin):
    """Stops training once ``condition(step)`` is true (asked after every step)."""

    def __init__(self, condition: Callable[[int], bool]) -> None:
        self.condition = condition

    def should_stop(self, step: int) -> bool:
        return bool(self.condition(step))


class ClipGradNorm(Plugin):
    """Clips the global gradient norm to ``max_norm`` after every backward."""

    def __init__(self, max_norm: float) -> None:
        self.max_norm = max_norm

    def after_backward(self, model: nn.Module) -> None:
        torch.nn.utils.clip_grad_norm_(model.parameters(), self.max_norm)


def warm_up(model: nn.Module, x: Tensor, y: Tensor, *, loss_fn: LossFn | None = None) -> None:
    """One forward and backward pass of a copy of ``model`` on ``(x, y)``, discarded: torch's
    one-off start-up costs (kernel selection, allocator growth) then fall outside the first
    timed run of a comparison. ``model`` and the random number generators are not touched."""
    import copy

    device = model_device(model)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        twin = copy.deepcopy(model).train()
        (loss_fn or cross_entropy)(twin(x), y).backward()
