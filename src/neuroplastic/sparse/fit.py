"""The built-in sparse training loop used by the CLI, with checkpoint and resume."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.progress import Progress
from torch import nn

from neuroplastic import registry
from neuroplastic.batches import model_device
from neuroplastic.data.splits import DataSplit, loader
from neuroplastic.errors import NeuroplasticError
from neuroplastic.evaluate.outputs import accuracy
from neuroplastic.importance.base import cross_entropy
from neuroplastic.io import read_metadata
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


def sparse_fit(model: nn.Module, data: DataSplit, recipe: SparseRecipe, *,
               checkpoint: str | Path | None = None, resume: bool = False,
               stop_after_epoch: int | None = None, progress: bool = False) -> SparseFitResult:
    """Train ``model`` on ``data.train`` with Adam while the sparsifier prunes and regrows.

    Args:
        model: modified in place (masked weights are exact zeros).
        data: the split; validation accuracy is logged every epoch (never the test split).
        recipe: method, sparsity and training settings.
        checkpoint: a safetensors file written (atomically) after every epoch.
        resume: continue from ``checkpoint`` if it exists; it must come from the same
            model architecture and recipe.
        stop_after_epoch: stop early after this epoch (an interruption, for tests).
        progress: show a progress bar on stderr.
    """
    if recipe.method != "dense":
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
    if recipe.method != "dense":
        kwargs = dict(recipe.method_kwargs)
        if recipe.method == "snip":
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
        torch.set_rng_state(groups["rng"]["torch"])
        train.generator.set_state(groups["rng"]["loader"])  # type: ignore[union-attr]
        start_epoch, history = info["epoch"], info["history"]
    step_time, steps_timed, update_time, updates_timed = 0.0, 0, 0.0, 0
    device = model_device(model)
    # refreshed by hand once per epoch: a refresh thread would compete with the timed steps
    bar = Progress(console=Console(stderr=True), disable=not progress, transient=True,
                   auto_refresh=False)
    with bar:
        task = bar.add_task(f"{recipe.method} {recipe.sparsity:.0%}",
                            total=total_steps, completed=start_epoch * len(train))
        for epoch in range(start_epoch, recipe.epochs):
            model.train()
            for x, y in train:
                x, y = x.to(device), y.to(device)
                start = time.perf_counter()
                optimizer.zero_grad(set_to_none=True)
                cross_entropy(model(x), y).backward()
                optimizer.step()
                if sparsifier is not None:
                    sparsifier.step()
                elapsed = time.perf_counter() - start
                if sparsifier is not None and sparsifier.log.update_steps[-1:] == [
                        sparsifier.step_count]:
                    update_time, updates_timed = update_time + elapsed, updates_timed + 1
                else:
                    step_time, steps_timed = step_time + elapsed, steps_timed + 1
                bar.advance(task)
            bar.refresh()
            row = {"epoch": float(epoch + 1), "val_acc": accuracy(model, val),
                   "sparsity": sparsifier.current_sparsity if sparsifier else 0.0}
            history.append(row)
            if path is not None:
                save_checkpoint(
                    path, model=model, optimizer=optimizer,
                    sparsifier_state=sparsifier.state_dict() if sparsifier else {},
                    rng={"torch": torch.get_rng_state(),
                         "loader": train.generator.get_state()},  # type: ignore[union-attr]
                    info={"epoch": epoch + 1, "history": history, "recipe": recipe.to_dict(),
                          "model": signature,
                          "log": asdict(sparsifier.log) if sparsifier else None})
            if stop_after_epoch is not None and epoch + 1 >= stop_after_epoch:
                break
    model.eval()
    finished = len(history) == recipe.epochs
    return SparseFitResult(model=model, sparsifier=sparsifier, history=history,
                           step_seconds=step_time / max(steps_timed, 1),
                           update_step_seconds=update_time / max(updates_timed, 1),
                           mean_step_seconds=(step_time + update_time)
                           / max(steps_timed + updates_timed, 1),
                           total_steps=total_steps, finished=finished)
