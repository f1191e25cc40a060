"""``neuroplastic sparse train | prune | export``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from neuroplastic.cli.common import (
    ARCH_HELP,
    DATA_HELP,
    FACTORY_HELP,
    STANDARDIZE_HELP,
    Device,
    JsonOut,
    RunFolder,
    absolute_data,
    absolute_factory,
    check_arch,
    check_factory,
    check_training_options,
    load_split,
    options_of,
    resolve_factory,
    write_run,
)
from neuroplastic.cli.output import console, set_interrupt_hint, warn
from neuroplastic.cli.progress import progress_bar
from neuroplastic.errors import NeuroplasticError
from neuroplastic.runs import run_dir, run_options  # light: no torch

if TYPE_CHECKING:
    from neuroplastic.evaluate.report import Report
    from neuroplastic.sparse.experiment import SparseRun
    from neuroplastic.sparse.fit import SparseRecipe

sparse_app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)



def sparse_report(run: SparseRun, title: str) -> Report:
    """report.html of a sparse run: numbers (strings such as the export form too),
    schedule, layer densities, accuracy, latency in ms/µs."""
    from neuroplastic.evaluate.report import Report, duration, grouped_bars, line_plot

    report = Report(title)
    for note in run.warnings:
        report.banner(note)
    report.table("Results", ["metric", "value"],
                 [[k, duration(v) if k.endswith("seconds") and isinstance(v, float) else v]
                  for k, v in run.metrics.items()])
    if run.schedule:
        steps, sparsity = zip(*run.schedule, strict=True)
        report.figure("Sparsity over training steps",
                      line_plot({"sparsity": (list(steps), list(sparsity))}, xlabel="step",
                                ylabel="sparsity", step=True))
    if run.layer_density:
        report.figure("Final density per layer",
                      grouped_bars({"density": list(run.layer_density.values())},
                                   list(run.layer_density), ylabel="density"))
    curves = {run.metrics["method"]: ([h["epoch"] for h in run.history],
                                      [h["val_acc"] for h in run.history])}
    if run.dense_history:
        curves["dense"] = ([h["epoch"] for h in run.dense_history],
                           [h["val_acc"] for h in run.dense_history])
    if run.history:
        report.figure("Validation accuracy per epoch",
                      line_plot(curves, xlabel="epoch", ylabel="validation accuracy"))
    if run.latencies:
        report.figure("Inference latency (batch 64, ms)",
                      grouped_bars({"ms": [1e3 * v for v in run.latencies.values()]},
                                   list(run.latencies), ylabel="milliseconds", ylim=None))
    return report


def print_metrics(metrics: dict[str, object]) -> None:
    from rich.table import Table

    table = Table("metric", "value")
    for key, value in metrics.items():
        table.add_row(key, f"{value:.4g}" if isinstance(value, float) else str(value))
    console.print(table)
    from neuroplastic.sparse.experiment import sparse_warnings

    for note in sparse_warnings(metrics):
        warn(note)


def finish(folder: Path, run: SparseRun, *, command: str, options: dict, recipe: SparseRecipe,
           json_out: bool, title: str, chance: float, adopt: tuple[str, ...] = ()) -> None:
    """Count the sparsity of the squashed model from its saved weights, write the run."""
    import tempfile

    from neuroplastic.io import load_tensors, save_model

    if "actual_sparsity" in run.metrics:
        with tempfile.TemporaryDirectory() as scratch:
            save_model(run.model, Path(scratch) / "model.safetensors")
            saved = load_tensors(Path(scratch) / "model.safetensors")
        names = list(run.layer_density)
        zeros = sum(int((saved[n] == 0).sum()) for n in names)
        run.metrics["actual_sparsity"] = zeros / sum(saved[n].numel() for n in names)
    print_metrics(run.metrics)
    from neuroplastic.evaluate.health import health_warnings

    health = health_warnings(models={"sparse model": run.model},
                             accuracies={"sparse model (test)": (run.metrics["test_acc"], chance)})
    write_run(folder, command=command, config={"options": options, "recipe": recipe.to_dict()},
              metrics=run.metrics, report=sparse_report(run, title), model=run.model,
              json_out=json_out, adopt=adopt,
              extra={"export.json": run.layout} if run.layout else None, health=health,
              notes=run.warnings)


SPARSE_RUNNER_OPTIONS = ("self", "model", "sparsity", "total_steps", "distribution", "update_frequency",
                         "seed", "dense_layers", "targets")
"""Sparsifier arguments the command sets itself (--sparsity, --epochs, --density-init, ...)."""


@sparse_app.command("train")
def train(
    ctx: typer.Context,
    method: str = typer.Option("granet", help="A sparse method (see `neuroplastic list`)."),
    sparsity: float = typer.Option(0.9, help="Target fraction of zero weights, in [0, 1)."),
    density_init: str = typer.Option("erk", help="Layer densities: erk or uniform."),
    dense_layer: list[str] = typer.Option([], help="Keep this weight dense (e.g. the first "
                                          "layer's, features.0.weight); repeatable."),
    data: str = typer.Option("digits", help=DATA_HELP),
    model_factory: str | None = typer.Option(None, help=FACTORY_HELP),
    model_arch: str | None = typer.Option(None, help=ARCH_HELP),
    epochs: int = typer.Option(30, help="Training epochs."),
    lr: float = typer.Option(1e-3, help="Adam learning rate."),
    batch_size: int = typer.Option(64, help="Batch size."),
    update_frequency: int | None = typer.Option(None, help="Steps between mask updates "
                                                 "(default: one epoch)."),
    param: list[str] = typer.Option([], help="A hyperparameter of --method, name=value; repeatable "
                                    "(e.g. death_rate=0.3, masking=parametrize)."),
    dense_baseline: bool = typer.Option(False, help="Also train the dense model the same way."),
    seed: int = typer.Option(0, help="Seed of initialisation, masks and shuffling."),
    device: Device = "cpu",
    out: RunFolder = None,
    resume: bool = typer.Option(False, help="Continue the interrupted run in --out."),
    standardize: bool = typer.Option(False, help=STANDARDIZE_HELP),
    json_out: JsonOut = False,
) -> None:
    """Train a sparse network from scratch, pruning and regrowing connections."""
    from neuroplastic.sparse.base import check_sparsity

    check_sparsity(sparsity)
    if density_init not in ("erk", "uniform"):
        raise NeuroplasticError(f"--density-init must be erk or uniform, got {density_init!r}")
    from neuroplastic import registry

    entry = registry.entry(method, kind="sparse")
    if entry.cls.prunes_trained:
        raise NeuroplasticError(f"{method} pruning prunes a trained model: use `sparse prune`")
    if not entry.cls.sparsifies:
        raise NeuroplasticError(f"{method} is the baseline, not a sparse method: add --dense-baseline to "
                                "a sparse run to train it beside")
    check_training_options(epochs=epochs, lr=lr, batch_size=batch_size, device=device)
    if update_frequency is not None and update_frequency < 1:
        raise NeuroplasticError(f"--update-frequency must be >= 1, got {update_frequency}")
    if resume:
        if out is None or not (out / "checkpoint.safetensors").is_file():
            raise NeuroplasticError("--resume needs --out pointing at a run with checkpoint.safetensors")
        if (out / "metrics.json").exists():
            raise NeuroplasticError(f"{out} holds a finished run; nothing to resume")
        folder = out
    else:
        folder = run_dir("sparse-train", out)
    check_arch(model_arch, model_factory)
    check_factory(model_factory)
    from neuroplastic.sparse.base import Sparsifier
    from neuroplastic.sparse.experiment import run_sparse
    from neuroplastic.sparse.fit import SparseRecipe

    typed = registry.parse_params(method, kind="sparse", items=param, extra=Sparsifier.__init__,
                                  exclude=SPARSE_RUNNER_OPTIONS)
    split = load_split(data, seed=seed, standardize=standardize)
    factory = resolve_factory(model_factory, split, arch=model_arch)
    from neuroplastic.data import loader

    needed = {"data": loader(split.train, batch_size=batch_size)} if "full" in entry.needs else {}
    registry.create(method, kind="sparse", model=factory(), sparsity=sparsity, total_steps=1,
                    **needed, **typed)  # ranges, on a throwaway model, before any training
    method_kwargs = {**typed, **({"dense_layers": list(dense_layer)} if dense_layer else {})}
    recipe = SparseRecipe(method=method, sparsity=sparsity, epochs=epochs, lr=lr,
                          batch_size=batch_size, seed=seed, distribution=density_init,
                          update_frequency=update_frequency, method_kwargs=method_kwargs)
    options = {**options_of(ctx.params), "data": absolute_data(data),
               "model_factory": absolute_factory(model_factory)}
    # the one file kept on Ctrl-C: the per-epoch checkpoint, so the run can resume
    checkpoint = folder / "checkpoint.safetensors"
    set_interrupt_hint(lambda: f"the checkpoint in {folder} is kept: continue with `neuroplastic sparse "
                       f"train --out {folder} --resume` and the same options" if checkpoint.is_file()
                       else "no epoch had finished, so there is no checkpoint to resume from")
    with progress_bar(f"{method} {sparsity:.0%}") as progress:
        run = run_sparse(split, recipe, factory, device=device, dense_baseline=dense_baseline,
                         checkpoint=checkpoint, resume=resume,
                         progress=progress)
    set_interrupt_hint(None)
    finish(folder, run, command="sparse train", options=options, recipe=recipe,
           json_out=json_out, title=f"neuroplastic sparse train: {method} at {sparsity:.0%}",
           chance=1 / split.num_classes, adopt=("checkpoint.safetensors",))


@sparse_app.command("prune")
def prune(
    ctx: typer.Context,
    model: Path | None = typer.Option(None, help="Trained dense weights (.safetensors); default: "
                                      "train (and cache) the reference model."),
    model_factory: str | None = typer.Option(None, help=FACTORY_HELP),
    model_arch: str | None = typer.Option(None, help=ARCH_HELP),
    data: str = typer.Option("digits", help=DATA_HELP),
    sparsity: float = typer.Option(0.9, help="Target fraction of zero weights, in [0, 1)."),
    scope: str = typer.Option("global", help="global (one threshold) or layer (same sparsity "
                              "per layer)."),
    finetune_epochs: int = typer.Option(0, help="Fine-tune with the masks fixed."),
    lr: float = typer.Option(1e-3, help="Adam learning rate of the fine-tuning."),
    batch_size: int = typer.Option(64, help="Batch size."),
    seed: int = typer.Option(0, help="Seed."),
    device: Device = "cpu",
    out: RunFolder = None,
    standardize: bool = typer.Option(False, help=STANDARDIZE_HELP),
    json_out: JsonOut = False,
) -> None:
    """One-shot magnitude pruning of a trained model, optionally fine-tuned."""
    from neuroplastic.sparse.base import check_sparsity

    check_sparsity(sparsity)
    if scope not in ("global", "layer"):
        raise NeuroplasticError(f"--scope must be global or layer, got {scope!r}")
    if finetune_epochs < 0:
        raise NeuroplasticError(f"--finetune-epochs must be >= 0, got {finetune_epochs}")
    check_training_options(lr=lr, batch_size=batch_size, device=device)
    if model is not None and not model.is_file():
        raise NeuroplasticError(f"checkpoint not found: {model}")
    folder = run_dir("sparse-prune", out)
    check_arch(model_arch, model_factory)
    check_factory(model_factory)
    from neuroplastic.data import loader
    from neuroplastic.evaluate.outputs import accuracy
    from neuroplastic.forget.experiment import trained_model
    from neuroplastic.io import load_model_weights
    from neuroplastic.models import seeded_model
    from neuroplastic.sparse.experiment import run_sparse
    from neuroplastic.sparse.fit import SparseRecipe
    from neuroplastic.training import TrainConfig

    split = load_split(data, seed=seed, standardize=standardize)
    factory = resolve_factory(model_factory, split, arch=model_arch)
    if model is not None:
        net = load_model_weights(seeded_model(factory, seed, device), model)
    else:
        with progress_bar("training the dense model (cached)") as progress:
            net, _ = trained_model(split, factory, TrainConfig(seed=seed), device=device,
                                   progress=progress)
    dense_acc = accuracy(net, loader(split.test, batch_size=256))
    recipe = SparseRecipe(method="magnitude", sparsity=sparsity, epochs=finetune_epochs, lr=lr,
                          batch_size=batch_size, seed=seed, method_kwargs={"scope": scope})
    with progress_bar(f"fine-tuning at {sparsity:.0%}") as progress:
        run = run_sparse(split, recipe, factory, device=device, initial=net, progress=progress)
    run.metrics["dense.test_acc"] = run.metrics["dense_test_acc"] = dense_acc  # old name kept
    options = {**options_of(ctx.params), "data": absolute_data(data),
               "model_factory": absolute_factory(model_factory)}
    finish(folder, run, command="sparse prune", options=options, recipe=recipe,
           json_out=json_out, title=f"neuroplastic sparse prune: magnitude at {sparsity:.0%}",
           chance=1 / split.num_classes)


@sparse_app.command("export")
def export(
    ctx: typer.Context,
    model: Path = typer.Option(..., help="Sparse weights (.safetensors, e.g. from sparse train)."),
    model_factory: str | None = typer.Option(None, help=FACTORY_HELP),
    model_arch: str | None = typer.Option(None, help=ARCH_HELP),
    data: str | None = typer.Option(
        None, help=DATA_HELP + " (test inputs for timing; default: the data and model factory "
                   "in the config.json beside --model, else digits)"),
    seed: int = typer.Option(0, help="Seed of the data split."),
    out: RunFolder = None,
    standardize: bool | None = typer.Option(None, help=STANDARDIZE_HELP + " Default: as the "
                                            "training run in the config.json beside --model."),
    json_out: JsonOut = False,
) -> None:
    """Export a sparse model in its fastest form (CSR, dead units removed), measured against
    its dense form. Writes model.safetensors (dense with zeros) and export.json (the layout
    that ``npl.sparse.rebuild_export`` turns back into the fast model)."""
    if not model.is_file():
        raise NeuroplasticError(f"checkpoint not found: {model}")
    folder = run_dir("sparse-export", out)
    trained_with = run_options(model.parent)
    if data is None:
        data = trained_with.get("data") or "digits"
        model_factory = model_factory or trained_with.get("model_factory")
        model_arch = model_arch or trained_with.get("model_arch")
    if standardize is None:
        standardize = bool(trained_with.get("standardize", False))
    check_arch(model_arch, model_factory)
    check_factory(model_factory)
    from neuroplastic.io import load_model_weights
    from neuroplastic.models import seeded_model
    from neuroplastic.sparse.experiment import SparseRun, counted_sparsity, export_metrics

    split = load_split(data, seed=seed, standardize=standardize)
    factory = resolve_factory(model_factory, split, arch=model_arch)
    net = load_model_weights(seeded_model(factory, seed, "cpu"), model)
    names = [n for n, p in net.named_parameters() if p.dim() > 1]
    metrics, latencies, layout = export_metrics(net, split)
    metrics = {"method": "export", "actual_sparsity": counted_sparsity(net, names), **metrics}
    run = SparseRun(metrics=metrics, model=net, history=[], latencies=latencies)
    print_metrics(metrics)
    options = {**options_of(ctx.params), "data": absolute_data(data),
               "model_factory": absolute_factory(model_factory)}
    write_run(folder, command="sparse export", config={"options": options},
              metrics=metrics, report=sparse_report(run, "neuroplastic sparse export"),
              model=net, json_out=json_out, extra={"export.json": layout})
