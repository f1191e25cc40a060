"""The main sparse job: train (or prune) to a sparsity, account FLOPs, export, time it.

Shared by ``neuroplastic sparse ...`` and ``benchmarks/sparse.py``.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from neuroplastic.batches import model_device
from neuroplastic.data.splits import DataSplit, loader
from neuroplastic.evaluate.outputs import accuracy
from neuroplastic.loop import ProgressFn
from neuroplastic.models.factory import ModelFactory, seeded_model
from neuroplastic.sparse.fit import SparseFitResult, SparseRecipe, sparse_fit
from neuroplastic.sparse.flops import macs, output_positions, train_flops_ratio
from neuroplastic.sparse.inference import export_layout, fastest_export
from neuroplastic.sparse.latency import latencies


def sparse_warnings(metrics: dict[str, Any]) -> list[str]:
    """Sentences for a missed sparsity target or an export that is not faster."""
    notes = []
    target, actual = metrics.get("target_sparsity"), metrics.get("actual_sparsity")
    if isinstance(target, float) and isinstance(actual, float) and actual < target - 1e-3:
        notes.append(f"missed the sparsity target: {actual:.4f} of the weights are zero, "
                     f"target {target:.4f}")
    speedup = metrics.get("export_speedup")
    if isinstance(speedup, float) and speedup < 1.05:
        notes.append(f"the exported model is not faster than the dense one ({speedup:.2f}x): "
                     "sparse kernels pay off only for large, very sparse layers")
    return notes


@dataclass
class SparseRun:
    """Metrics (flat, for metrics.json) and what the report plots."""

    metrics: dict[str, Any]
    model: nn.Module  # squashed: plain weights with zeros
    history: list[dict[str, float]]
    dense_history: list[dict[str, float]] = field(default_factory=list)
    schedule: list[tuple[int, float]] = field(default_factory=list)
    layer_density: dict[str, float] = field(default_factory=dict)
    latencies: dict[str, float] = field(default_factory=dict)
    layout: dict[str, object] = field(default_factory=dict)  # export.json of the fastest form

    @property
    def warnings(self) -> list[str]:
        """:func:`sparse_warnings` of this run's metrics."""
        return sparse_warnings(self.metrics)


def counted_sparsity(model: nn.Module, names: list[str]) -> float:
    """Fraction of exact zeros among the named weights of a (squashed) model."""
    params = dict(model.named_parameters())
    zeros = sum(int((params[n] == 0).sum()) for n in names)
    return zeros / sum(params[n].numel() for n in names)


def export_metrics(model: nn.Module, data: DataSplit, *, batch: int = 64
                   ) -> tuple[dict[str, Any], dict[str, float], dict[str, object]]:
    """Latency of the squashed model vs its fastest export on a test batch (the form is
    chosen on a validation batch), the largest output difference, and the export's layout
    (:func:`~neuroplastic.sparse.inference.export_layout`)."""
    device = model_device(model)
    inputs = data.test.tensors[0][:batch].to(device)
    exported, form = fastest_export(model, data.val.tensors[0][:batch].to(device))
    with torch.no_grad():
        diff = float((model(inputs) - exported(inputs)).abs().max())
    times = latencies({"dense": model, "exported": exported}, inputs)
    return ({"export_speedup": times["dense"] / times["exported"], "export_max_abs_diff": diff,
             "export_form": form}, times, export_layout(exported, form))


def run_sparse(data: DataSplit, recipe: SparseRecipe, factory: ModelFactory, *,
               device: str = "cpu", dense_baseline: bool = False,
               checkpoint: Path | None = None, resume: bool = False,
               progress: ProgressFn | None = None, initial: nn.Module | None = None,
               export: bool = True) -> SparseRun:
    """Train ``factory()`` (or fine-tune ``initial``) under ``recipe``; evaluate on the test
    split only at the end (nothing is selected on it); with ``export``, time the fastest
    export of the sparse model too."""
    model = initial if initial is not None else seeded_model(factory, recipe.seed, device)
    sample = data.train.tensors[0][:1].to(device)
    result: SparseFitResult = sparse_fit(model, data, recipe, checkpoint=checkpoint,
                                         resume=resume, progress=progress)
    sparsifier = result.sparsifier
    names = list(sparsifier.shapes) if sparsifier else []
    metrics: dict[str, Any] = {"method": recipe.method, "target_sparsity": recipe.sparsity,
                               "finished": float(result.finished),
                               "step_seconds": result.step_seconds,
                               "mean_step_seconds": result.mean_step_seconds}
    if sparsifier is not None and sparsifier.log.update_steps:
        metrics["update_step_seconds"] = result.update_step_seconds
    run = SparseRun(metrics=metrics, model=model, history=result.history)
    if sparsifier is not None:
        positions = output_positions(model, names, sample)
        final_counts = sparsifier.log.layer_counts[-1]
        dense_macs = macs({n: math.prod(s) for n, s in sparsifier.shapes.items()}, positions)
        metrics["inference_flops_ratio"] = macs(final_counts, positions) / dense_macs
        metrics["train_flops_ratio"] = train_flops_ratio(
            sparsifier.log, total_steps=result.total_steps, shapes=sparsifier.shapes,
            positions=positions, dense_gradient_updates=sparsifier.uses_dense_gradient)
        run.schedule = list(zip(sparsifier.log.steps, [1 - d for d in sparsifier.log.densities],
                                strict=True))
        run.layer_density = {n: final_counts[n] / math.prod(s)
                             for n, s in sparsifier.shapes.items()}
        run.model = sparsifier.export()
        metrics["actual_sparsity"] = counted_sparsity(run.model, names)
    metrics["test_acc"] = accuracy(run.model, loader(data.test, batch_size=256))
    metrics["val_acc"] = result.history[-1]["val_acc"] if result.history else float("nan")
    if dense_baseline:
        dense = run_sparse(data, replace(recipe, method="dense", method_kwargs={}), factory,
                           device=device, progress=progress,
                           initial=copy.deepcopy(initial) if initial is not None else None)
        metrics["dense.test_acc"] = metrics["dense_test_acc"] = dense.metrics["test_acc"]  # old name kept
        metrics["dense_step_seconds"] = dense.metrics["step_seconds"]
        # a masked step without a mask update, and the average over all steps (updates included)
        metrics["step_overhead"] = result.step_seconds / dense.metrics["step_seconds"]
        metrics["mean_step_overhead"] = result.mean_step_seconds / dense.metrics["step_seconds"]
        run.dense_history = dense.history
    if sparsifier is not None and export:
        exported, run.latencies, run.layout = export_metrics(run.model, data)
        metrics.update(exported)
    return run
