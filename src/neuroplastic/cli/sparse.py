"""``neuroplastic sparse train | prune | export``."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from neuroplastic import registry
from neuroplastic.cli.common import console, options_of, resolve_factory, write_run
from neuroplastic.data import load_data, loader
from neuroplastic.errors import NeuroplasticError
from neuroplastic.evaluate.outputs import accuracy
from neuroplastic.evaluate.report import Report, grouped_bars, line_plot
from neuroplastic.forget.experiment import trained_model
from neuroplastic.io import load_model_weights, load_tensors, save_model
from neuroplastic.models import seeded_model
from neuroplastic.runs import run_dir, run_options
from neuroplastic.sparse.base import check_sparsity
from neuroplastic.sparse.experiment import SparseRun, counted_sparsity, export_metrics, run_sparse
from neuroplastic.sparse.fit import SparseRecipe
from neuroplastic.training import TrainConfig

sparse_app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)

DATA_HELP = "digits, mnist1d, a .npz/.csv file, an image folder, or torchvision:<Name>:<root>."
FACTORY_HELP = "pkg.module:function returning your nn.Module (called with no arguments)."


def sparse_report(run: SparseRun, title: str) -> Report:
    """report.html of a sparse run: numbers, schedule, layer densities, accuracy, latency."""
    report = Report(title)
    report.table("Results", ["metric", "value"],
                 [[k, v] for k, v in run.metrics.items() if not isinstance(v, str)])
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
        report.figure("Inference latency (batch 64, seconds)",
                      grouped_bars({"seconds": list(run.latencies.values())},
                                   list(run.latencies), ylabel="seconds", ylim=None))
    return report


def print_metrics(metrics: dict[str, object]) -> None:
    table = Table("metric", "value")
    for key, value in metrics.items():
        table.add_row(key, f"{value:.4g}" if isinstance(value, float) else str(value))
    console.print(table)


def finish(folder: Path, run: SparseRun, *, command: str, options: dict, recipe: SparseRecipe,
           json_out: bool, title: str) -> None:
    """Save the squashed model, count its sparsity from the saved file, write the run."""
    save_model(run.model, folder / "model.safetensors")
    if "actual_sparsity" in run.metrics:
        saved = load_tensors(folder / "model.safetensors")
        names = [n for n in run.layer_density]
        zeros = sum(int((saved[n] == 0).sum()) for n in names)
        run.metrics["actual_sparsity"] = zeros / sum(saved[n].numel() for n in names)
    print_metrics(run.metrics)
    write_run(folder, command=command, config={"options": options, "recipe": recipe.to_dict()},
              metrics=run.metrics, report=sparse_report(run, title), model=None,
              json_out=json_out)


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
    epochs: int = typer.Option(30, help="Training epochs."),
    lr: float = typer.Option(1e-3, help="Adam learning rate."),
    batch_size: int = typer.Option(64, help="Batch size."),
    update_frequency: int | None = typer.Option(None, help="Steps between mask updates "
                                                 "(default: one epoch)."),
    dense_baseline: bool = typer.Option(False, help="Also train the dense model the same way."),
    seed: int = typer.Option(0, help="Seed of initialisation, masks and shuffling."),
    device: str = typer.Option("cpu", help="torch device."),
    out: Path | None = typer.Option(None, help="Run folder (default runs/sparse-train-<time>)."),
    resume: bool = typer.Option(False, help="Continue the interrupted run in --out."),
    json_out: bool = typer.Option(False, "--json", help="Also print metrics.json to stdout."),
) -> None:
    """Train a sparse network from scratch, pruning and regrowing connections."""
    registry.get(method, kind="sparse")
    check_sparsity(sparsity)
    if method in ("magnitude",):
        raise NeuroplasticError("magnitude pruning prunes a trained model: use `sparse prune`")
    split = load_data(data, seed=seed)
    factory = resolve_factory(model_factory, split)
    if resume:
        if out is None or not (out / "checkpoint.safetensors").is_file():
            raise NeuroplasticError("--resume needs --out pointing at a run with checkpoint.safetensors")
        folder = out
    else:
        folder = run_dir("sparse-train", out)
    recipe = SparseRecipe(method=method, sparsity=sparsity, epochs=epochs, lr=lr,
                          batch_size=batch_size, seed=seed, distribution=density_init,
                          update_frequency=update_frequency,
                          method_kwargs={"dense_layers": list(dense_layer)} if dense_layer else {})
    run = run_sparse(split, recipe, factory, device=device, dense_baseline=dense_baseline,
                     checkpoint=folder / "checkpoint.safetensors", resume=resume, progress=True)
    finish(folder, run, command="sparse train", options=options_of(ctx.params), recipe=recipe,
           json_out=json_out, title=f"neuroplastic sparse train: {method} at {sparsity:.0%}")


@sparse_app.command("prune")
def prune(
    ctx: typer.Context,
    model: Path | None = typer.Option(None, help="Trained dense weights (.safetensors); default: "
                                      "train (and cache) the reference model."),
    model_factory: str | None = typer.Option(None, help=FACTORY_HELP),
    data: str = typer.Option("digits", help=DATA_HELP),
    sparsity: float = typer.Option(0.9, help="Target fraction of zero weights, in [0, 1)."),
    scope: str = typer.Option("global", help="global (one threshold) or layer (same sparsity "
                              "per layer)."),
    finetune_epochs: int = typer.Option(0, help="Fine-tune with the masks fixed."),
    lr: float = typer.Option(1e-3, help="Adam learning rate of the fine-tuning."),
    batch_size: int = typer.Option(64, help="Batch size."),
    seed: int = typer.Option(0, help="Seed."),
    device: str = typer.Option("cpu", help="torch device."),
    out: Path | None = typer.Option(None, help="Run folder (default runs/sparse-prune-<time>)."),
    json_out: bool = typer.Option(False, "--json", help="Also print metrics.json to stdout."),
) -> None:
    """One-shot magnitude pruning of a trained model, optionally fine-tuned."""
    check_sparsity(sparsity)
    if finetune_epochs < 0:
        raise NeuroplasticError(f"--finetune-epochs must be >= 0, got {finetune_epochs}")
    split = load_data(data, seed=seed)
    factory = resolve_factory(model_factory, split)
    folder = run_dir("sparse-prune", out)
    if model is not None:
        net = load_model_weights(seeded_model(factory, seed, device), model)
    else:
        net, _ = trained_model(split, factory, TrainConfig(seed=seed), device=device,
                               description="training the dense model (cached)")
    dense_acc = accuracy(net, loader(split.test, batch_size=256))
    recipe = SparseRecipe(method="magnitude", sparsity=sparsity, epochs=finetune_epochs, lr=lr,
                          batch_size=batch_size, seed=seed, method_kwargs={"scope": scope})
    run = run_sparse(split, recipe, factory, device=device, initial=net, progress=True)
    run.metrics["dense_test_acc"] = dense_acc
    finish(folder, run, command="sparse prune", options=options_of(ctx.params), recipe=recipe,
           json_out=json_out, title=f"neuroplastic sparse prune: magnitude at {sparsity:.0%}")


@sparse_app.command("export")
def export(
    ctx: typer.Context,
    model: Path = typer.Option(..., help="Sparse weights (.safetensors, e.g. from sparse train)."),
    model_factory: str | None = typer.Option(None, help=FACTORY_HELP),
    data: str | None = typer.Option(
        None, help=DATA_HELP + " (test inputs for timing; default: the data and model factory "
                   "in the config.json beside --model, else digits)"),
    seed: int = typer.Option(0, help="Seed of the data split."),
    out: Path | None = typer.Option(None, help="Run folder (default runs/sparse-export-<time>)."),
    json_out: bool = typer.Option(False, "--json", help="Also print metrics.json to stdout."),
) -> None:
    """Measure the CSR + dead-unit export of a sparse model against its dense form."""
    if data is None:
        trained_with = run_options(model.parent)
        data = trained_with.get("data") or "digits"
        model_factory = model_factory or trained_with.get("model_factory")
    split = load_data(data, seed=seed)
    factory = resolve_factory(model_factory, split)
    folder = run_dir("sparse-export", out)
    net = load_model_weights(seeded_model(factory, seed, "cpu"), model)
    names = [n for n, p in net.named_parameters() if p.dim() > 1]
    metrics, latencies = export_metrics(net, split)
    metrics = {"method": "export", "actual_sparsity": counted_sparsity(net, names), **metrics}
    run = SparseRun(metrics=metrics, model=net, history=[], latencies=latencies)
    print_metrics(metrics)
    write_run(folder, command="sparse export", config={"options": options_of(ctx.params)},
              metrics=metrics, report=sparse_report(run, "neuroplastic sparse export"),
              model=None, json_out=json_out)
