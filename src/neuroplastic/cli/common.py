"""Pieces every command shares: option checks, model factories, run-folder output.

Only light modules are imported at the top: torch, scikit-learn and matplotlib are
imported inside the functions that need them, so ``--help`` and usage errors are fast.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from neuroplastic.cli.output import console
from neuroplastic.cli.threads import fit_threads
from neuroplastic.errors import NeuroplasticError
from neuroplastic.runs import check_metrics, staged_folder  # light: no torch

if TYPE_CHECKING:
    from torch import nn

    from neuroplastic.data import DataSplit
    from neuroplastic.evaluate.report import Report
    from neuroplastic.models import ModelFactory


def require_positive(option: str, value: float | None) -> None:
    """``--option`` must be a finite number > 0."""
    if value is not None and not (math.isfinite(value) and value > 0):
        raise NeuroplasticError(f"{option} must be a number > 0, got {value}")


def require_fraction(option: str, value: float | None, *, closed: bool = False) -> None:
    """``--option`` must lie in (0, 1), or [0, 1] when ``closed``."""
    if value is None:
        return
    inside = 0 <= value <= 1 if closed else 0 < value < 1
    if not (math.isfinite(value) and inside):
        interval = "[0, 1]" if closed else "(0, 1)"
        raise NeuroplasticError(f"{option} must lie in {interval}, got {value}")


def registered_names(kind: str, *, option: str, value: str) -> list[str]:
    """Every registered method of ``kind``; ``value`` must be one of them (a plug-in's
    methods count: nothing here lists names by hand).

    Raises:
        NeuroplasticError: ``<option> must be one of ...`` if ``value`` is not registered.
    """
    from neuroplastic import registry

    names = [entry.name for entry in registry.available(kind)]
    if value not in names:
        raise NeuroplasticError(f"{option} must be one of {', '.join(names)}, got {value!r}")
    return names


def check_device(device: str) -> str:
    """A torch device this build of torch can use; one line naming the problem otherwise."""
    import torch

    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError):
        raise NeuroplasticError(
            f"--device {device!r} is not a torch device (e.g. cpu, cuda, cuda:1)") from None
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            raise NeuroplasticError(f"--device {device}: this torch build or machine has no CUDA device")
        if parsed.index is not None and parsed.index >= torch.cuda.device_count():
            raise NeuroplasticError(f"--device {device}: only {torch.cuda.device_count()} CUDA device(s)")
    elif parsed.type == "mps" and not torch.backends.mps.is_available():
        raise NeuroplasticError(f"--device {device}: MPS is not available here")
    elif parsed.type not in ("cpu", "cuda", "mps"):
        raise NeuroplasticError(f"--device {device}: use cpu, cuda or mps")
    return device


def check_training_options(*, epochs: int | None = None, lr: float | None = None,
                           batch_size: int | None = None, device: str | None = None) -> None:
    """The checks every training command makes before loading anything."""
    if epochs is not None and epochs < 1:
        raise NeuroplasticError(f"--epochs must be >= 1, got {epochs}")
    require_positive("--lr", lr)
    if batch_size is not None and batch_size < 1:
        raise NeuroplasticError(f"--batch-size must be >= 1, got {batch_size}")
    if device is not None:
        check_device(device)


def parse_hidden(hidden: str | None) -> tuple[int, ...] | None:
    """``--hidden 64,64`` as widths (None: the rule's default)."""
    if hidden is None:
        return None
    try:
        widths = tuple(int(w) for w in hidden.split(",") if w.strip())
    except ValueError:
        raise NeuroplasticError(f"--hidden must be comma-separated integers, got {hidden!r}") from None
    if not widths or min(widths) < 1:
        raise NeuroplasticError(f"--hidden needs at least one width >= 1, got {hidden!r}")
    if max(widths) > MAX_WIDTH:
        raise NeuroplasticError(f"--hidden widths must be <= {MAX_WIDTH}, got {max(widths)}")
    return widths


MAX_WIDTH = 65536
"""Widest hidden layer the CLI builds (wider ones fail in the allocator, not here)."""


def check_factory(model_factory: str | None) -> None:
    """Import a ``--model-factory`` now, so a typo fails before any data is loaded."""
    if model_factory is not None:
        from neuroplastic.models import load_factory

        load_factory(model_factory)


def resolve_factory(model_factory: str | None, data: DataSplit, *, arch: str | None = None,
                    batch_norm: bool = False) -> ModelFactory:
    """The user's factory, a built-in architecture (``--model-arch``), or the reference model
    for ``data``; checked on one example batch of ``data``: it must build, accept the inputs
    and give one logit per class. Without ``--threads``, torch's thread count is then chosen
    for the model's size."""
    from neuroplastic.models import build, build_architecture, checked_factory, default_model, load_factory

    if arch is not None:  # a bad name or shape is one line from checked_factory's first build
        shape, classes = data.input_shape, data.num_classes
        factory = lambda: build_architecture(arch, shape, classes)  # noqa: E731
    elif model_factory is not None:
        user_factory = load_factory(model_factory)
        factory: ModelFactory = lambda: build(user_factory, name=model_factory)  # noqa: E731
    else:
        shape, classes = data.input_shape, data.num_classes
        factory = lambda: default_model(shape, classes, batch_norm=batch_norm)  # noqa: E731
    checked = checked_factory(factory, data)
    import torch

    with torch.random.fork_rng(devices=[]):  # a throwaway model to count: the RNG stays as it was
        fit_threads(checked())
    return checked


def load_split(data: str, *, seed: int, standardize: bool, id_column: str | None = None) -> DataSplit:
    """The data a command names, its features standardised with the training split's
    statistics if asked (``--standardize``)."""
    from neuroplastic.data import load_data
    from neuroplastic.data import standardize as standardized

    split = load_data(data, seed=seed, id_column=id_column)
    return standardized(split) if standardize else split


Device = Annotated[str, typer.Option(help="torch device: cpu, cuda, cuda:1, mps.")]
"""``--device``, declared once for every command (default ``"cpu"``)."""
RunFolder = Annotated[Path | None, typer.Option(
    "--out", help="Run folder, new or empty (default runs/<command>-<time>).")]
"""``--out``, declared once for every command that writes a run folder."""
JsonOut = Annotated[bool, typer.Option("--json", help="Also print metrics.json to stdout.")]
"""``--json``, declared once."""

DATA_HELP = ("digits, mnist1d, fashion-mnist[:<folder>], mnist:<folder>, kmnist:<folder>, a .npz/.csv file, "
             "an image folder, or torchvision:<Name>:<root>.")
ARCH_HELP = "A built-in model instead of the default one: mlp, cnn (PyTorch's MNIST CNN) or resnet18."


def check_arch(arch: str | None, model_factory: str | None) -> None:
    """``--model-arch`` names a built-in model and excludes ``--model-factory``."""
    from neuroplastic.cli.names import ARCHITECTURES

    if arch is None:
        return
    if arch not in ARCHITECTURES:
        raise NeuroplasticError(f"--model-arch must be one of {', '.join(ARCHITECTURES)}, got {arch!r}")
    if model_factory is not None:
        raise NeuroplasticError("give --model-arch or --model-factory, not both")
FACTORY_HELP = "pkg.module:function returning your nn.Module (called with no arguments)."


def absolute_data(data: str) -> str:
    """``data`` with a file or folder path made absolute, so a run's config.json can be read
    from any folder (built-in names and torchvision specs stay as they are)."""
    if data in ("digits", "mnist1d", "circles", "moons", "fashion-mnist", "mnist", "kmnist"):
        return data
    name, sep, folder = data.partition(":")
    if sep and name in ("fashion-mnist", "mnist", "kmnist"):
        return f"{name}:{Path(folder).resolve()}"
    if data.startswith("torchvision:"):
        kind, name, root = [*data.split(":", 2), "", ""][:3]
        return f"{kind}:{name}:{Path(root).resolve()}" if root else data
    return str(Path(data).resolve())


def absolute_factory(model_factory: str | None) -> str | None:
    """A ``file.py:function`` factory with its file made absolute (module paths stay)."""
    if model_factory is None:
        return None
    location, _, attr = model_factory.rpartition(":")
    return f"{Path(location).resolve()}:{attr}" if location.endswith(".py") else model_factory


STANDARDIZE_HELP = ("Scale every input feature by the training split's mean and std (useful for "
                    "tables, whose columns are given to the model unscaled).")


def options_of(params: dict[str, Any]) -> dict[str, Any]:
    """Command options as JSON-able values (paths, also in lists, as strings)."""
    def plain(value: Any) -> Any:
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        return str(value) if isinstance(value, Path) else value

    return {k: plain(v) for k, v in params.items()}


def write_run(folder: Path, *, command: str, config: dict[str, Any], metrics: dict[str, Any],
              report: Report, model: nn.Module | None, json_out: bool,
              adopt: tuple[str, ...] = (), extra: dict[str, Any] | None = None,
              health: list[str] | None = None, notes: list[str] | None = None) -> None:
    """Write config.json, metrics.json, report.html, (if given) model.safetensors and the
    ``extra`` JSON files into a staging folder, then rename it to ``folder`` (files named in
    ``adopt``, e.g. a training checkpoint already in ``folder``, move along); with
    ``json_out`` print metrics.json.

    ``health``: sentences of :func:`neuroplastic.evaluate.health.health_warnings` (diverged
    weights, chance-level accuracy): each is printed as a warning, shown as a banner at the
    top of the report and added to ``warnings`` in metrics.json. ``notes``: the command's own
    warnings (already printed and in the report), added to ``warnings`` too."""
    from neuroplastic import __version__
    from neuroplastic.cli.output import warn
    from neuroplastic.io import save_model, to_json, write_json

    for note in health or []:
        warn(note)
    for note in reversed(health or []):
        report.banner(note, top=True)
    earlier = [metrics["warnings"]] if metrics.get("warnings") else []
    every = [*earlier, *(n for n in notes or [] if n not in earlier), *(health or [])]
    if every:
        metrics = {**metrics, "warnings": " | ".join(every)}
    check_metrics(metrics)
    with staged_folder(folder, adopt=adopt) as staging:
        if model is not None:
            save_model(model, staging / "model.safetensors")
        write_json(staging / "config.json", {"command": command, "version": __version__, **config})
        write_json(staging / "metrics.json", metrics)
        report.write(staging / "report.html")
        for name, payload in (extra or {}).items():
            write_json(staging / name, payload)
    console.print(f"run folder: {folder}")
    if json_out:
        sys.stdout.write(to_json(metrics) + "\n")
