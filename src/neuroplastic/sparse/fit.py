"""The built-in sparse training loop used by the CLI, with checkpoint and resume."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from neuroplastic import loop, registry
from neuroplastic.batches import model_device, seeded_rng
from neuroplastic.data.splits import DataSplit, loader
from neuroplastic.errors import NeuroplasticError
from neuroplastic.evaluate.outputs import accuracy
from neuroplastic.io import read_metadata
from neuroplastic.loop import Plugin, ProgressFn
from neuroplastic.sparse.base import Sparsifier, SparsityLog, check_sparsity
from neuroplastic.sparse.checkpoint import load_checkpoint, load_optimizer, save_checkpoint


@dataclass(frozen=True)
class SparseRecipe:
    """Everything that defines a sparse training run (``method="dense"`` trains dense).

    ``update_frequency=None`` updates the masks once per epoch.
    """

    method: str
    sparsity: float
    epochs: int = 30
    lr: float = 1e-3
    batch_size: int = 64
    seed: int = 0
    distribution: str = "erk"
    update_frequency: int | None = None
    method_kwargs: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class SparseFitResult:
    """The trained (still masked) model, its sparsifier and per-epoch history."""

    model: nn.Module
    sparsifier: Sparsifier | None
    history: list[dict[str, float]]
    step_seconds: float  # mean of the steps without a mask update
    update_step_seconds: float  # mean of the steps with a mask update
    mean_step_seconds: float  # over all steps
    total_steps: int
    finished: bool


def adam(params: Iterable[nn.Parameter], *, lr: float) -> torch.optim.Adam:
    """Adam, fused into one kernel per step when every parameter is a floating-point tensor on
    CPU or CUDA. Measured on a 2-core AVX-512 CPU with torch 2.13: 2-3x faster than the
    default per-tensor loop, which is also slower on sparse weights (its ``aten::sqrt`` takes
    about 10x longer on an exactly zero second moment than on a non-zero one)."""
    params = list(params)
    fused = all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params)
    return torch.optim.Adam(params, lr=lr, fused=fused)


def model_signature(model: nn.Module) -> str:
    """Architecture fingerprint: class and the names and shapes of every tensor."""
    parts = [type(model).__qualname__] + [f"{k}:{tuple(v.shape)}" for k, v in model.state_dict().items()]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


def _check_resumable(path: Path, recipe: SparseRecipe, signature: str) -> None:
    info = read_metadata(path).get("info")
    if info is None:
        raise NeuroplasticError(f"{path} is not a neuroplastic training checkpoint")
    saved = json.loads(info)
    if saved.get("model") != signature:
        raise NeuroplasticError(f"checkpoint {path} is from another model architecture")
    if saved.get("recipe") != recipe.to_dict():
        differing = sorted(k for k, v in recipe.to_dict().items() if saved["recipe"].get(k) != v)
        raise NeuroplasticError(f"checkpoint {path} is from another recipe ({', '.join(differing)})")


class EpochLog(Plugin):
    """After every epoch: validation accuracy and sparsity into ``history``; stops after
    epoch ``stop_after`` if given."""

    def __init__(self, *, val: Any, history: list[dict[str, float]], sparsifier: Sparsifier | None,
                 stop_after: int | None) -> None:
        self.val, self.history, self.sparsifier, self.stop_after = val, history, sparsifier, stop_after
        self.epoch = 0

    def after_epoch(self, model: nn.Module, epoch: int) -> None:
        self.epoch = epoch
        self.history.append({"epoch": float(epoch), "val_acc": accuracy(model, self.val),
                             "sparsity": self.sparsifier.current_sparsity if self.sparsifier else 0.0})

    def should_stop(self, step: int) -> bool:
        return self.stop_after is not None and self.epoch >= self.stop_after


class EpochCheckpoint(Plugin):
    """After every epoch, a checkpoint to resume from bit for bit: weights, optimizer,
    sparsifier, RNG states of torch and the shuffling loader, history and recipe."""

    def __init__(self, path: Path, *, optimizer: torch.optim.Optimizer, sparsifier: Sparsifier | None,
                 loader: Any, history: list[dict[str, float]], recipe: SparseRecipe,
                 signature: str) -> None:
        self.path, self.optimizer, self.sparsifier, self.loader = path, optimizer, sparsifier, loader
        self.history, self.recipe, self.signature = history, recipe, signature

    def after_epoch(self, model: nn.Module, epoch: int) -> None:
        save_checkpoint(
            self.path, model=model, optimizer=self.optimizer,
            sparsifier_state=self.sparsifier.state_dict() if self.sparsifier else {},
            rng={"torch": torch.get_rng_state(), "loader": self.loader.generator.get_state()},
            info={"epoch": epoch, "history": self.history, "recipe": self.recipe.to_dict(),
                  "model": self.signature,
                  "log": asdict(self.sparsifier.log) if self.sparsifier else None})


def sparse_fit(model: nn.Module, data: DataSplit, recipe: SparseRecipe, *,
               checkpoint: str | Path | None = None, resume: bool = False,
               stop_after_epoch: int | None = None,
               progress: ProgressFn | None = None) -> SparseFitResult:
    """Train ``model`` on ``data.train`` with Adam while the sparsifier prunes and regrows.

    Args:
        model: modified in place (masked weights are exact zeros).
        data: the split; validation accuracy is logged every epoch (never the test split).
        recipe: method, sparsity and training settings.
        checkpoint: a safetensors file written (atomically) after every epoch.
        resume: continue from ``checkpoint`` if it exists; it must come from the same
            model architecture and recipe.
        stop_after_epoch: stop early after this epoch (an interruption, for tests).
        progress: ``progress(done, total)`` after every step.
    """
    method = registry.entry(recipe.method, kind="sparse")
    if method.cls.sparsifies:
        check_sparsity(recipe.sparsity)
    signature = model_signature(model)
    path = Path(checkpoint) if checkpoint is not None else None
    resuming = resume and path is not None and path.is_file()
    if resuming:
        _check_resumable(path, recipe, signature)  # type: ignore[arg-type]
    train = loader(data.train, batch_size=recipe.batch_size, shuffle=True, seed=recipe.seed)
    val = loader(data.val, batch_size=256)
    total_steps = max(1, recipe.epochs * len(train))
    sparsifier: Sparsifier | None = None
    if method.cls.sparsifies:
        kwargs = dict(recipe.method_kwargs)
        if "full" in method.needs:  # a one-shot criterion on training batches (SNIP)
            kwargs["data"] = loader(data.train, batch_size=recipe.batch_size)
        sparsifier = registry.create(
            recipe.method, kind="sparse", model=model, sparsity=recipe.sparsity,
            total_steps=total_steps, distribution=recipe.distribution,
            update_frequency=recipe.update_frequency or len(train), seed=recipe.seed, **kwargs)
    optimizer = adam(model.parameters(), lr=recipe.lr)
    history: list[dict[str, float]] = []
    start_epoch = 0
    if resuming:
        groups, info, rest = load_checkpoint(path)  # type: ignore[arg-type]
        model.load_state_dict(groups["model"])
        load_optimizer(optimizer, groups["optim"], rest)
        if sparsifier is not None:
            sparsifier.load_state_dict(groups["sparsifier"])
            sparsifier.log = SparsityLog(**info["log"])
        train.generator.set_state(groups["rng"]["loader"])  # type: ignore[union-attr]
        start_epoch, history = info["epoch"], info["history"]
    epochs_log = EpochLog(val=val, history=history, sparsifier=sparsifier, stop_after=stop_after_epoch)
    plugins: list[Any] = [sparsifier] if sparsifier is not None else []
    plugins.append(epochs_log)
    if path is not None:
        plugins.append(EpochCheckpoint(path, optimizer=optimizer, sparsifier=sparsifier, loader=train,
                                       history=history, recipe=recipe, signature=signature))
    with seeded_rng(recipe.seed, model_device(model)):  # dropout: the same run on every call
        if resuming:
            torch.set_rng_state(groups["rng"]["torch"])
        result = loop.fit(model, train, optimizer=optimizer, epochs=recipe.epochs, plugins=plugins,
                          progress=progress, start_epoch=start_epoch, time_steps=True)
    first_step = start_epoch * len(train)
    updates = set(sparsifier.log.update_steps) if sparsifier is not None else set()
    update_times = [t for i, t in enumerate(result.step_seconds, start=first_step + 1) if i in updates]
    plain_times = [t for i, t in enumerate(result.step_seconds, start=first_step + 1) if i not in updates]
    step_time, steps_timed = sum(plain_times), len(plain_times)
    update_time, updates_timed = sum(update_times), len(update_times)
    finished = len(history) == recipe.epochs
    return SparseFitResult(model=model, sparsifier=sparsifier, history=history,
                           step_seconds=step_time / max(steps_timed, 1),
                           update_step_seconds=update_time / max(updates_timed, 1),
                           mean_step_seconds=(step_time + update_time)
                           / max(steps_timed + updates_timed, 1),
                           total_steps=total_steps, finished=finished)
