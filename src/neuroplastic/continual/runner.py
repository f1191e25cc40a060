"""Train a model on a task stream with one continual method and fill the accuracy matrix."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from neuroplastic import loop
from neuroplastic.continual.base import ContinualMethod
from neuroplastic.data.splits import loader
from neuroplastic.data.streams import Stream
from neuroplastic.errors import NeuroplasticError
from neuroplastic.evaluate.continual import continual_metrics
from neuroplastic.intervene.atomic import atomic
from neuroplastic.loop import ProgressFn


@dataclass(frozen=True)
class ContinualRecipe:
    """How every task is trained: a fresh optimizer per task (SGD with momentum, or Adam),
    ``epochs`` passes, seeded shuffling. The defaults are the pilot protocol of
    shared/CONTINUAL.md (SGD, momentum 0.9, lr 0.01, batch 32, 25 epochs per task)."""

    epochs: int = 25
    lr: float = 0.01
    momentum: float = 0.9
    batch_size: int = 32
    optimizer: str = "sgd"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or not self.lr > 0:
            raise NeuroplasticError("epochs and batch_size must be >= 1 and lr > 0")
        if self.optimizer not in ("sgd", "adam"):
            raise NeuroplasticError(f"optimizer must be sgd or adam, got {self.optimizer!r}")

    def make_optimizer(self, model: nn.Module) -> torch.optim.Optimizer:
        params = [p for p in model.parameters() if p.requires_grad]
        if self.optimizer == "adam":
            return torch.optim.Adam(params, lr=self.lr)
        return torch.optim.SGD(params, lr=self.lr, momentum=self.momentum)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ContinualResult:
    """R[t, j] (test accuracy on task j after task t), the untrained model's accuracy per
    task (FWT's baseline), the metrics and the time each task took."""

    matrix: Tensor
    baseline: Tensor
    metrics: dict[str, float]
    task_seconds: list[float] = field(default_factory=list)
    val_matrix: Tensor | None = None  # the same on the validation splits (for choosing)

    @property
    def warnings(self) -> list[str]:
        """A sentence when the method forgot a lot (BWT below -0.2)."""
        bwt = self.metrics.get("bwt", 0.0)
        return [f"forgot a lot: BWT {bwt:.3f}"] if bwt < -0.2 else []


@contextmanager
def _cleaned(method: ContinualMethod, model: nn.Module) -> Iterator[None]:
    try:
        yield
    finally:
        method.cleanup(model)


def run_stream(model: nn.Module, stream: Stream, method: ContinualMethod, recipe: ContinualRecipe, *,
               progress: ProgressFn | None = None, validate: bool = False) -> ContinualResult:
    """Train ``model`` on every task of ``stream`` in order with ``method``; after each task
    evaluate it on every task's test split (and with ``validate``, validation split).
    ``progress(done, total)`` counts the steps of the whole stream.

    All or nothing: if anything fails, the model's weights are restored as they were.

    Raises:
        NeuroplasticError: if the method needs task-incremental units and the stream is
            not task-IL, or the model's outputs do not fit the stream.
    """
    if method.needs_task_labels and stream.setting != "task":
        raise NeuroplasticError(f"{method.name} needs task labels (one output head per task): use "
                                f"--setting task, not {stream.setting}")
    tasks = len(stream)
    matrix = torch.zeros(tasks, tasks, dtype=torch.float64)
    val_matrix = torch.zeros(tasks, tasks, dtype=torch.float64) if validate else None
    loss_fn = stream.loss_fn()
    seconds = []
    method.set_learning_rate(recipe.lr)
    sizes = [len(method.training_data(stream, t)) for t in range(tasks)]  # type: ignore[arg-type]
    steps = [math.ceil(n / recipe.batch_size) * recipe.epochs for n in sizes]
    with atomic(model), _cleaned(method, model):
        baseline = torch.tensor([stream.accuracy(model, e) for e in stream], dtype=torch.float64)
        for t, experience in enumerate(stream):
            start = time.perf_counter()
            data = loader(method.training_data(stream, t), batch_size=recipe.batch_size,  # type: ignore[arg-type]
                          shuffle=True, seed=recipe.seed + t)
            # one bar over the whole stream: steps of the earlier tasks come first
            overall = None if progress is None else (
                lambda done, total, before=sum(steps[:t]): progress(before + done, sum(steps)))  # type: ignore[misc]
            loop.fit(model, data, optimizer=recipe.make_optimizer(model), epochs=recipe.epochs,
                     loss_fn=loss_fn, plugins=[method], task=experience, progress=overall)
            seconds.append(time.perf_counter() - start)
            for j, other in enumerate(stream):
                matrix[t, j] = stream.accuracy(model, other)
                if val_matrix is not None:
                    val_matrix[t, j] = stream.accuracy(model, other, split="val")
    metrics = continual_metrics(matrix, baseline if stream.setting != "class" else None)
    metrics["seconds"] = float(sum(seconds))
    return ContinualResult(matrix=matrix, baseline=baseline, metrics=metrics, task_seconds=seconds,
                           val_matrix=val_matrix)
