"""The corruption benchmark protocol every caller shares (``neuroplastic adapt`` and
``benchmarks/adapt.py``): for each corruption x severity, the source model, Norm and the
chosen method, each adapter made fresh (TENT's reference resets per corruption x severity);
then one online pass of the method through every corrupted set in turn, after which the
clean test set is scored the way the adapted model predicts (``clean_acc_after``)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from neuroplastic import registry
from neuroplastic.adapt.base import Adapter
from neuroplastic.data.corruptions import corrupt
from neuroplastic.intervene.atomic import unchanged
from neuroplastic.loop import ProgressFn


@dataclass
class CorruptionResult:
    """Errors per method, corruption and severity, and what adaptation cost.

    ``clean_acc``: the source model in eval mode; ``clean_acc_batch_stats``: the same model
    predicting with each clean batch's statistics (Norm, nothing adapted), so that
    ``clean_acc_after`` (after one online pass through every corrupted set) is compared
    with the way it predicts; ``seconds_per_batch`` / ``forward_seconds_per_batch``: the
    method's ``adapt`` call and the plain forward pass timed over the same batches."""

    method: str
    errors: dict[str, dict[tuple[str, int], float]] = field(default_factory=dict)
    clean_acc: float = float("nan")
    clean_acc_batch_stats: float = float("nan")
    clean_acc_after: float = float("nan")
    seconds_per_batch: float = float("nan")
    forward_seconds_per_batch: float = float("nan")

    def mean_error(self, method: str, severities: tuple[int, ...] = (1, 2, 3, 4, 5)) -> float:
        values = [e for (_, s), e in self.errors[method].items() if s in severities]
        return statistics.fmean(values) if values else float("nan")

    @property
    def warnings(self) -> list[str]:
        """Sentences for an adapter that did worse than the unadapted model, and for clean
        accuracy that fell more than 2 points after the online pass."""
        notes = []
        for name in dict.fromkeys(("norm", self.method)):  # once each, also when norm is the method
            if self.mean_error(name) > self.mean_error("source"):
                notes.append(f"{name} has a higher mean error than the unadapted model "
                             f"({self.mean_error(name):.3f} vs {self.mean_error('source'):.3f})")
        drop = self.clean_acc_batch_stats - self.clean_acc_after
        if drop > 0.02:
            notes.append(f"after adapting online through every corrupted set, clean accuracy fell by "
                         f"{drop * 100:.1f} points ({self.clean_acc_batch_stats:.3f} with batch statistics "
                         f"before -> {self.clean_acc_after:.3f})")
        return notes

    def metrics(self) -> dict[str, float]:
        """``<method>.<corruption>.<severity>`` (error), ``mean_error`` and
        ``mean_error_3to5`` of the adapted method, ``source.mean_error``, ``norm.mean_error``
        (and the old names ``mean_error.<method>``, ``mean_error_3to5.<method>``), clean
        accuracy before and after, costs."""
        out: dict[str, float] = {}
        for method, table in self.errors.items():
            out.update({f"{method}.{c}.{s}": e for (c, s), e in table.items()})
            out[f"mean_error.{method}"] = self.mean_error(method)  # old names, kept for one release
            out[f"mean_error_3to5.{method}"] = self.mean_error(method, (3, 4, 5))
            # the one schema: the method's own keys unprefixed, every other model's <name>.<metric>
            prefix = "" if method == self.method else f"{method}."
            out[f"{prefix}mean_error"] = self.mean_error(method)
            out[f"{prefix}mean_error_3to5"] = self.mean_error(method, (3, 4, 5))
        out.update({"clean_acc": self.clean_acc, "clean_acc_batch_stats": self.clean_acc_batch_stats,
                    "clean_acc_after": self.clean_acc_after,
                    "seconds_per_batch": self.seconds_per_batch,
                    "forward_seconds_per_batch": self.forward_seconds_per_batch,
                    "cost_ratio": self.seconds_per_batch / self.forward_seconds_per_batch})
        return out


def _error(predict: Callable[[Tensor], Tensor], x: Tensor, y: Tensor, batch_size: int) -> float:
    wrong = 0
    for start in range(0, len(x), batch_size):
        logits = predict(x[start:start + batch_size])
        wrong += int((logits.argmax(-1) != y[start:start + batch_size]).sum())
    return wrong / len(x)


def run_corruptions(model: nn.Module, x: Tensor, y: Tensor, specs: list[tuple[str, int]], *,
                    method: str, params: dict[str, Any] | None = None, batch_size: int = 64,
                    bounds: tuple[float, float] = (0.0, 1.0), seed: int = 0,
                    corrupted: Callable[[str, int], tuple[Tensor, Tensor]] | None = None,
                    progress: ProgressFn | None = None) -> CorruptionResult:
    """Errors of source, Norm and ``method`` (a registered adapter) on every (corruption,
    severity) of ``specs`` of the test set ``(x, y)``; the model ends as it started, bit for
    bit (every parameter and buffer restored, on success and on failure alike).

    Args:
        corrupted: ``corrupted(name, severity) -> (x, y)`` to read prepared sets (CIFAR-10-C
            files) instead of generating them from ``(x, y)``.
    """
    with unchanged(model):
        params = dict(params or {})
        make: Callable[[str], Adapter] = lambda name: registry.create(  # noqa: E731
            name, kind="adapt", **(params if name == method else {}))
        device = next(model.parameters()).device
        model.eval()
        result = CorruptionResult(method=method)
        with torch.no_grad():
            result.clean_acc = 1 - _error(lambda b: model(b.to(device)).cpu(), x, y, batch_size)
        # the registered baselines (the unadapted source first), then the method
        baselines = sorted((e.name for e in registry.available("adapt") if e.baseline),
                           key=lambda name: registry.get(name, kind="adapt").adapts)
        methods = baselines + ([method] if method not in baselines else [])
        for name in reversed(methods):  # a model the method cannot adapt fails here, named by it
            make(name).setup(model)
        for name in methods:
            result.errors[name] = {}
        sets = {}
        total = len(specs) * (len(methods) + 1)
        done = 0
        adapt_seconds = forward_seconds = 0.0
        for corruption, severity in specs:
            xc, yc = corrupted(corruption, severity) if corrupted else \
                (corrupt(x, corruption, severity, seed=seed, bounds=bounds), y)
            sets[(corruption, severity)] = (xc, yc)
            for name in methods:
                adapter = make(name)
                begin = time.perf_counter()
                if not adapter.adapts:
                    with torch.no_grad():
                        error = _error(lambda b: model(b.to(device)).cpu(), xc, yc, batch_size)
                    forward_seconds += time.perf_counter() - begin
                else:
                    adapter.bind(model)  # set-up (optimizer, saved state) once, not per batch
                    begin = time.perf_counter()
                    error = _error(lambda b, a=adapter: a.adapt(model, b.to(device)).cpu(), xc, yc,
                                   batch_size)
                    if name == method:
                        adapt_seconds += time.perf_counter() - begin
                    adapter.reset()
                result.errors[name][(corruption, severity)] = error
                done += 1
                if progress:
                    progress(done, total)
        # one online pass through everything, then the clean test set as the adapted model predicts
        lifelong = make(method)
        for xc, _ in sets.values():
            for start in range(0, len(xc), batch_size):
                lifelong.adapt(model, xc[start:start + batch_size].to(device))
        result.clean_acc_after = 1 - _error(lambda b: lifelong.predict(model, b.to(device)).cpu(), x, y,
                                            batch_size)
        lifelong.reset()
        baseline = make("norm")
        result.clean_acc_batch_stats = 1 - _error(lambda b: baseline.predict(model, b.to(device)).cpu(), x, y,
                                                  batch_size)
        if progress:
            progress(total, total)
        batches = sum(-(-len(xc) // batch_size) for xc, _ in sets.values())
        result.forward_seconds_per_batch = forward_seconds / batches
        result.seconds_per_batch = adapt_seconds / batches
        return result
