"""``neuroplastic adapt`` (test-time adaptation on corrupted inputs) and ``neuroplastic
shift`` (learning through concept shift with a homeostatic learning rate)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from neuroplastic.cli.common import (
    ARCH_HELP,
    DATA_HELP,
    FACTORY_HELP,
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
    registered_names,
    write_run,
)
from neuroplastic.cli.output import console, warn
from neuroplastic.cli.progress import progress_bar, progress_tasks
from neuroplastic.cli.threads import fit_threads
from neuroplastic.errors import NeuroplasticError
from neuroplastic.runs import merge_runs, run_dir  # light: no torch

if TYPE_CHECKING:
    from neuroplastic.adapt.homeostasis import ShiftResult
    from neuroplastic.adapt.runner import CorruptionResult
    from neuroplastic.evaluate.report import Report

adapt_app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
shift_app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)



@adapt_app.callback(invoke_without_command=True)
def adapt(
    ctx: typer.Context,
    method: str = typer.Option("tent", help="tent, norm or nhl."),
    corruption: str = typer.Option("all", help="name:severity (gaussian_noise:3), a name (every "
                                   "severity) or all (every corruption x severity)."),
    data: str = typer.Option("digits", help=DATA_HELP),
    cifar10c: Path | None = typer.Option(None, help="A CIFAR-10-C folder (<corruption>.npy, labels.npy): "
                                         "read the corrupted test sets from it instead of generating them."),
    model: Path | None = typer.Option(None, help="Trained weights (.safetensors); default: train (and "
                                      "cache) the reference model with BatchNorm."),
    model_factory: str | None = typer.Option(None, help=FACTORY_HELP),
    model_arch: str | None = typer.Option(None, help=ARCH_HELP),
    episodic: bool = typer.Option(False, help="Reset after every batch (default: online)."),
    batch_size: int = typer.Option(64, help="Test batch size."),
    param: list[str] = typer.Option([], help="A hyperparameter of the method, name=value; repeatable "
                                    "(e.g. lr=0.001, entropy_margin=0.4, hebbian_lr=0.001)."),
    epochs: int = typer.Option(30, help="Epochs of the source model (when it is trained here)."),
    seed: int = typer.Option(0, help="Seed of the split, the source model and the corruptions."),
    device: Device = "cpu",
    out: RunFolder = None,
    json_out: JsonOut = False,
) -> None:
    """Adapt a trained classifier at test time, without labels, to corrupted inputs."""
    if ctx.invoked_subcommand is not None:
        return
    registered_names("adapt", option="--method", value=method)
    check_training_options(epochs=epochs, batch_size=batch_size, device=device)
    if model is not None and not model.is_file():
        raise NeuroplasticError(f"checkpoint not found: {model}")
    if cifar10c is not None and not cifar10c.is_dir():
        raise NeuroplasticError(f"--cifar10c {cifar10c}: not a folder")
    folder = run_dir("adapt", out)
    check_arch(model_arch, model_factory)
    check_factory(model_factory)
    from neuroplastic import registry

    params = registry.parse_params(method, kind="adapt", items=param, exclude=("episodic",))
    params["episodic"] = episodic
    registry.create(method, kind="adapt", **params)  # bad hyperparameters fail before any work
    import torch

    from neuroplastic.adapt.runner import run_corruptions
    from neuroplastic.cli.common import resolve_factory
    from neuroplastic.data.corruptions import check_cifar10c, corruptions_for, load_cifar10c, parse_spec
    from neuroplastic.forget.experiment import trained_model
    from neuroplastic.io import load_model_weights
    from neuroplastic.models import checked_factory, default_model, seeded_model
    from neuroplastic.training import TrainConfig

    split = load_split(data, seed=seed, standardize=False)
    x, y = split.test.tensors
    specs = parse_spec(corruption, available=corruptions_for(x))
    if cifar10c is not None:
        check_cifar10c(cifar10c, sorted({name for name, _ in specs}))  # before any training
    if model_factory is not None or model_arch is not None:
        factory = resolve_factory(model_factory, split, arch=model_arch)
    else:
        shape, classes = split.input_shape, split.num_classes
        factory = checked_factory(lambda: default_model(shape, classes, batch_norm=True), split)
        fit_threads(factory())
    if model is not None:
        net = load_model_weights(seeded_model(factory, seed, device), model)
    else:
        with progress_bar("training the source model (cached)") as progress:
            net, _ = trained_model(split, factory, TrainConfig(epochs=epochs, seed=seed), device=device,
                                   progress=progress)
    train_x = split.train.tensors[0]
    bounds = (float(train_x.min()), float(train_x.max()))
    corrupted = (lambda name, severity: load_cifar10c(cifar10c, name, severity).tensors) \
        if cifar10c is not None else None
    with torch.no_grad(), progress_bar(f"{method} on {len(specs)} corrupted test sets") as progress:
        result = run_corruptions(net, x, y, specs, method=method, params=params, batch_size=batch_size,
                                 bounds=bounds, seed=seed, corrupted=corrupted, progress=progress)
    metrics: dict[str, Any] = {"method": method, "data": split.name, "episodic": float(episodic),
                               **result.metrics()}
    notes = result.warnings
    print_adapt_summary(result)
    console.print(adapt_verdict(result, 1 / split.num_classes))
    for note in notes:
        warn(note)
    options = {**options_of(ctx.params), "data": absolute_data(data),
               "model_factory": absolute_factory(model_factory)}
    from neuroplastic.evaluate.health import health_warnings

    health = health_warnings(models={"source model": net}, accuracies={
        "source model (clean test)": (result.clean_acc, 1 / split.num_classes),
        f"{method} (clean test after adapting)": (result.clean_acc_after, 1 / split.num_classes)})
    write_run(folder, command="adapt", config={"options": options, "params": params}, metrics=metrics,
              report=adapt_report(result, f"neuroplastic adapt: {method} on {split.name}", notes,
                                  chance=1 / split.num_classes, params=params),
              model=None, json_out=json_out, health=health, notes=notes)


def print_adapt_summary(result: CorruptionResult) -> None:
    from rich.table import Table

    table = Table("method", "mean error", "mean error, severity 3-5")
    table.columns[0].no_wrap = True
    for name in result.errors:
        table.add_row(name, f"{result.mean_error(name):.3f}", f"{result.mean_error(name, (3, 4, 5)):.3f}")
    console.print(table)
    console.print(f"clean accuracy {result.clean_acc:.3f} ({result.clean_acc_batch_stats:.3f} with batch "
                  f"statistics), after online adaptation {result.clean_acc_after:.3f}; "
                  f"{result.seconds_per_batch * 1e3:.2f} ms per batch "
                  f"({result.seconds_per_batch / result.forward_seconds_per_batch:.1f}x a forward pass)")


def adapt_verdict(result: CorruptionResult, chance: float) -> str:
    """One sentence: what adapting did, and whether it is good."""
    method = result.method
    mine, source, norm = (result.mean_error(n) for n in (method, "source", "norm"))
    if mine < source - 0.005:
        judged = f"it cut the unadapted model's mean error from {source:.3f} to {mine:.3f}"
    else:
        judged = f"it did not lower the unadapted model's mean error ({source:.3f} -> {mine:.3f})"
    versus = "below" if mine < norm - 0.005 else "above" if mine > norm + 0.005 else "level with"
    return (f"{method} adapted to {len(next(iter(result.errors.values())))} corrupted test sets without "
            f"labels: {judged}, {versus} Norm's {norm:.3f} (chance error {1 - chance:.3f}); clean accuracy "
            f"after the online pass {result.clean_acc_after:.3f} (with batch statistics before: "
            f"{result.clean_acc_batch_stats:.3f}); {result.seconds_per_batch * 1e3:.2f} ms per batch, "
            f"{result.seconds_per_batch / result.forward_seconds_per_batch:.1f}x a forward pass.")


def adapt_report(result: CorruptionResult, title: str, notes: list[str], *, chance: float,
                 params: dict[str, Any]) -> Report:
    from neuroplastic.evaluate.report import Report, grouped_bars, heatmap

    report = Report(title)
    for note in notes:
        report.banner(note)
    report.text(adapt_verdict(result, chance))
    report.table("Mean error", ["method", "all severities", "severity 3-5"],
                 [[n, result.mean_error(n), result.mean_error(n, (3, 4, 5))] for n in result.errors])
    report.table("Clean accuracy and cost", ["measure", "value"], [
        ["clean accuracy, source model (eval mode)", result.clean_acc],
        ["clean accuracy with batch statistics, before adapting", result.clean_acc_batch_stats],
        [f"clean accuracy after one online pass of {result.method}", result.clean_acc_after],
        ["seconds per batch (adapt call)", result.seconds_per_batch],
        ["seconds per batch (plain forward)", result.forward_seconds_per_batch],
        ["cost ratio", result.seconds_per_batch / result.forward_seconds_per_batch],
        ["chance accuracy", chance],
        *[[f"--param {k}", str(v)] for k, v in params.items()]])
    corruptions = sorted({c for c, _ in next(iter(result.errors.values()))})
    severities = sorted({s for _, s in next(iter(result.errors.values()))})
    every = [e for table in result.errors.values() for e in table.values() if e == e]
    low, high = (min(every), max(every)) if every else (0.0, 1.0)
    for name, table in result.errors.items():
        values = [[table.get((c, s), float("nan")) for s in severities] for c in corruptions]
        report.figure(f"{name}: error by corruption and severity (colour scale {low:.2f}-{high:.2f}, "
                      "shared by every method)", heatmap(
            values, rows=corruptions, columns=[str(s) for s in severities], xlabel="severity",
            ylabel="corruption", vmin=low, vmax=max(high, low + 1e-6)))
    report.figure("Error per corruption (mean over the severities run)", grouped_bars(
        {name: [sum(e for (c2, _), e in table.items() if c2 == c) / len(severities) for c in corruptions]
         for name, table in result.errors.items()}, corruptions, ylabel="error"))
    report.text(f"Errors are 1 - accuracy on the test set under each corruption. clean_acc_after: "
                f"clean test accuracy, predicted the way the adapted model predicts (batch statistics), "
                f"after one online pass of {result.method} through every corrupted set; compare it with "
                f"clean_acc_batch_stats, the unadapted model predicting the same way.")
    return report


SHIFT_LR = 0.05
"""The CLI's starting rate: lrh.py's 1e-3 (the library's default) makes 300,000 steps on MNIST;
digits' 10 epochs of batches of 10 are 1,250 steps, where 1e-3 ends at 7-14% test accuracy
(benchmarks/adapt.py) and 0.05 at 44-72%."""


@shift_app.callback(invoke_without_command=True)
def shift(
    ctx: typer.Context,
    method: str = typer.Option("homeostatic", help="homeostatic, constant or random-lr."),
    swaps: int = typer.Option(5, help="Label swaps per epoch (two random classes trade labels)."),
    compare: bool = typer.Option(True, help="Also run the other two learning-rate rules."),
    param: list[str] = typer.Option([], help="A hyperparameter of --method, name=value; repeatable "
                                    "(the built-in rules have none; a plug-in's may)."),
    data: str = typer.Option("digits", help=DATA_HELP),
    model_arch: str | None = typer.Option(None, "--model-arch", help=(
        "A built-in model instead of the reference's inputs-80-60-classes ELU network: cnn "
        "(PyTorch's MNIST CNN) or resnet18 (CIFAR stem), for image data; mlp is that network.")),
    epochs: int = typer.Option(10, help="Epochs of the stream."),
    lr: float = typer.Option(SHIFT_LR, help="Starting learning rate eta0 (moves are eta0 / 10). lrh.py's "
                             "1e-3 is for 50 epochs of 60,000 MNIST images; on digits it stays at chance "
                             "for 10 epochs (benchmark), so the CLI starts at 0.05."),
    batch_size: int = typer.Option(10, help="Batch size (the reference's 10)."),
    seed: int = typer.Option(0, help="Seed of the split, the initialisation and the swaps."),
    device: Device = "cpu",
    out: RunFolder = None,
    json_out: JsonOut = False,
) -> None:
    """Learn a stream whose labels keep swapping, with a homeostatic learning rate."""
    if ctx.invoked_subcommand is not None:
        return
    registered = registered_names("shift", option="--method", value=method)
    from neuroplastic import registry

    params = registry.parse_params(method, kind="shift", items=param)
    registry.create(method, kind="shift", **params)  # bad hyperparameters fail before any work
    check_training_options(epochs=epochs, lr=lr, batch_size=batch_size, device=device)
    check_arch(model_arch, None)
    if swaps < 0:
        raise NeuroplasticError(f"--swaps must be >= 0, got {swaps}")
    folder = run_dir("shift", out)
    split = load_split(data, seed=seed, standardize=False)
    if batch_size > len(split.train):
        raise NeuroplasticError(f"--batch-size {batch_size} exceeds the {len(split.train)} training samples")
    import math

    from neuroplastic.adapt.homeostasis import ConceptShiftStream, shift_mlp, shift_warnings, train_shift
    from neuroplastic.models import seeded_model

    if model_arch in (None, "mlp"):
        factory = lambda: shift_mlp(math.prod(split.input_shape), split.num_classes)  # noqa: E731
    else:  # checked on one batch: an image model on flat data is one line
        from neuroplastic.cli.common import resolve_factory

        factory = resolve_factory(None, split, arch=model_arch)
    methods = [method, *(m for m in registered if m != method)] if compare else [method]
    results, nets = {}, {}
    with progress_tasks() as start:
        for name in methods:
            stream = ConceptShiftStream(split.train, swaps=swaps, epochs=epochs, batch_size=batch_size,
                                        seed=seed)
            net = seeded_model(factory, seed, device)
            fit_threads(net)
            results[name] = train_shift(net, stream, method=name, lr=lr, test=split.test, seed=seed,
                                        params=params if name == method else None, progress=start(name))
            nets[name] = net
    metrics: dict[str, Any] = {"method": method, "data": split.name, "swaps_per_epoch": float(swaps),
                               **merge_runs(method, {name: r.metrics() for name, r in results.items()})}
    notes = shift_warnings(results, method)
    print_shift_summary(results)
    verdict = shift_verdict(results, method, 1 / split.num_classes)
    console.print(verdict)
    for note in notes:
        warn(note)
    from neuroplastic.evaluate.health import health_warnings

    chance = 1 / split.num_classes
    health = health_warnings(models=nets, accuracies={
        f"{name} (online)": (r.metrics()["online_acc"], chance) for name, r in results.items()})
    write_run(folder, command="shift", config={"options": options_of(ctx.params), "params": params},
              metrics=metrics,
              report=shift_report(results, f"neuroplastic shift: {method}, {swaps} swaps per epoch", notes,
                                  verdict=verdict),
              model=None, json_out=json_out, health=health, notes=notes)


def print_shift_summary(results: dict[str, ShiftResult]) -> None:
    from rich.table import Table

    table = Table("learning rate", "online acc", "after swaps", "final test acc", "final lr")
    table.columns[0].no_wrap = True
    for name, r in results.items():
        m = r.metrics()
        recovery = "— (no swaps)" if m["recovery_acc"] != m["recovery_acc"] else f"{m['recovery_acc']:.3f}"
        table.add_row(name, f"{m['online_acc']:.3f}", recovery,
                      f"{m['final_test_acc']:.3f}",
                      f"{m['lr_final']:.4g}")
    console.print(table)


def shift_verdict(results: dict[str, ShiftResult], method: str, chance: float) -> str:
    """One sentence: how the rule did against the others."""
    m = results[method].metrics()
    parts = [f"{method}: online accuracy {m['online_acc']:.3f}, final test accuracy "
             f"{m['final_test_acc']:.3f} (chance {chance:.3f})"]
    if m["recovery_acc"] == m["recovery_acc"]:
        parts.append(f"{m['recovery_acc']:.3f} over the {int(m['recovery_window'])} batches after each swap")
    for other, r in results.items():
        if other != method:
            o = r.metrics()
            better = "better than" if m["online_acc"] > o["online_acc"] + 0.005 else \
                "worse than" if m["online_acc"] < o["online_acc"] - 0.005 else "level with"
            parts.append(f"online {better} {other} ({o['online_acc']:.3f})")
    return "; ".join(parts) + "."


def shift_report(results: dict[str, ShiftResult], title: str, notes: list[str], *,
                 verdict: str = "") -> Report:
    from neuroplastic.evaluate.report import Report, line_plot

    report = Report(title)
    for note in notes:
        report.banner(note)
    if verdict:
        report.text(verdict)
    keys = ["online_acc", "recovery_acc", "recovery_window", "final_test_acc", "lr_final", "seconds"]
    report.table("Results", ["metric", *results],
                 [[k, *(r.metrics()[k] for r in results.values())] for k in keys])

    def smooth(values: list[float], window: int = 25) -> list[float]:
        out, total = [], 0.0
        for i, v in enumerate(values):
            total += v - (values[i - window] if i >= window else 0.0)
            out.append(total / min(i + 1, window))
        return out

    report.figure("Online accuracy (predicted before each update; 25-batch mean)", line_plot(
        {n: ([float(i) for i in range(1, len(r.online_acc) + 1)], smooth(r.online_acc))
         for n, r in results.items()}, xlabel="batch", ylabel="accuracy"))
    report.figure("Learning rate", line_plot(
        {n: ([float(i) for i in range(1, len(r.lr) + 1)], r.lr) for n, r in results.items()},
        xlabel="batch", ylabel="learning rate", step=True))
    report.figure("Test accuracy under the current labels", line_plot(
        {n: ([float(s) for s, _ in r.test_acc], [a for _, a in r.test_acc]) for n, r in results.items()},
        xlabel="batch", ylabel="test accuracy"))
    swaps = next(iter(results.values())).swap_steps
    report.text(f"Label swaps happened after batches {', '.join(map(str, swaps[:30]))}"
                f"{' ...' if len(swaps) > 30 else ''}. 'after swaps' (recovery_acc): mean online "
                "accuracy over the batches after each swap (20, or half the spacing of swaps when "
                "they come closer, so that the window never reaches the next swap).")
    return report
