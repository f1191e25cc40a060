"""Pieces every command shares: model factories, run-folder output."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from torch import nn

from neuroplastic.data import DataSplit
from neuroplastic.evaluate.report import Report
from neuroplastic.io import save_model, to_json, write_json
from neuroplastic.models import ModelFactory, build, default_model, load_factory
from neuroplastic.runs import check_metrics

console = Console(stderr=True)


def resolve_factory(model_factory: str | None, data: DataSplit) -> ModelFactory:
    """The user's ``pkg.module:function`` factory, or the reference model for ``data``."""
    if model_factory is not None:
        user_factory = load_factory(model_factory)
        return lambda: build(user_factory)
    shape, classes = data.input_shape, data.num_classes
    return lambda: default_model(shape, classes)


def options_of(params: dict[str, Any]) -> dict[str, Any]:
    """Command options as JSON-able values (paths, also in lists, as strings)."""
    def plain(value: Any) -> Any:
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        return str(value) if isinstance(value, Path) else value

    return {k: plain(v) for k, v in params.items()}


def write_run(folder: Path, *, command: str, config: dict[str, Any], metrics: dict[str, Any],
              report: Report, model: nn.Module | None, json_out: bool) -> None:
    """Write config.json, metrics.json, report.html and (if given) model.safetensors, each
    atomically, then name the folder; with ``json_out`` print metrics.json to stdout."""
    from neuroplastic import __version__

    check_metrics(metrics)
    if model is not None:
        save_model(model, folder / "model.safetensors")
    write_json(folder / "config.json", {"command": command, "version": __version__, **config})
    write_json(folder / "metrics.json", metrics)
    report.write(folder / "report.html")
    console.print(f"run folder: {folder}")
    if json_out:
        sys.stdout.write(to_json(metrics) + "\n")
