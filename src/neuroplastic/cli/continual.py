"""``neuroplastic continual``: learn a stream of tasks with a continual method, compare."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import typer

from neuroplastic.cli.common import (
    Device,
    JsonOut,
    RunFolder,
    check_arch,
    check_device,
    check_training_options,
    options_of,
    parse_hidden,
    write_run,
)
from neuroplastic.cli.output import console, warn
from neuroplastic.cli.progress import progress_bar
from neuroplastic.cli.threads import fit_threads
from neuroplastic.errors import NeuroplasticError
from neuroplastic.runs import merge_runs, run_dir  # light: no torch

if TYPE_CHECKING:
    from neuroplastic.continual import ContinualResult
    from neuroplastic.evaluate.report import Report

continual_app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)

MAX_TASKS = 50
"""Each permuted task holds a copy of the data: 50 keeps even MNIST-size streams in memory."""

SCENARIO_HELP = ("<split|permuted|rotated>-<data>[:<folder>]: split-digits (task-IL unless --setting "
                 "class), permuted-digits (domain-IL unless --setting task), split-mnist1d, "
                 "permuted-mnist1d; split-, permuted- or rotated-fashion-mnist (also mnist, kmnist; "
                 "IDX files, see --data fashion-mnist); or "
                 "torchvision:<split|permuted>-<MNIST|CIFAR100>:<root>.")


def continual_verdict(results: dict[str, ContinualResult], method: str, chance: float) -> str:
    """One sentence: what the method kept, against chance and the bounds that were run."""
    m = results[method].metrics
    kept = "forgot little" if m["bwt"] > -0.05 else "forgot a lot"
    text = (f"{method} ended with ACC {m['acc']:.3f} over the tasks (chance {chance:.3f}) and BWT "
            f"{m['bwt']:+.3f}: it {kept}")
    bounds = [f"{name} {r.metrics['acc']:.3f}" for name, r in results.items() if name != method]
    return text + (f"; compared: {', '.join(bounds)}." if bounds else ".")


def continual_report(results: dict[str, ContinualResult], title: str, stream_name: str,
                     notes: list[str], *, verdict: str = "", params: dict[str, Any] | None = None) -> Report:
    """report.html: the verdict, summary table, one heatmap of R per method, per-task final
    accuracy."""
    from neuroplastic.evaluate.report import Report, grouped_bars, heatmap

    report = Report(title)
    for note in notes:
        report.banner(note)
    if verdict:
        report.text(verdict)
    if params:
        report.table("Hyperparameters given (--param)", ["name", "value"],
                     [[k, str(v)] for k, v in params.items()])
    keys = ["acc", "bwt", "fwt", "forgetting", "seconds"]
    rows = [[key, *(r.metrics.get(key, float("nan")) for r in results.values())] for key in keys]
    report.table("Results", ["metric", *results], rows)
    for name, result in results.items():
        tasks = [str(t) for t in range(result.matrix.shape[0])]
        report.figure(f"{name}: accuracy on task j (columns) after training task t (rows)",
                      heatmap(result.matrix.tolist(), rows=tasks, columns=tasks,
                              xlabel="evaluated task j", ylabel="after task t"))
    report.figure("Accuracy on every task after the last one", grouped_bars(
        {name: r.matrix[-1].tolist() for name, r in results.items()},
        [f"task {t}" for t in range(next(iter(results.values())).matrix.shape[0])], ylabel="test accuracy"))
    report.text(f"{stream_name}. ACC = mean final accuracy over tasks; BWT = mean change of a task's "
                "accuracy from right after it was learned to the end (negative = forgetting); FWT = "
                "accuracy on a task before training on it minus an untrained model's (task- and "
                "domain-IL only); forgetting = mean drop from each task's best accuracy.")
    return report


@continual_app.callback(invoke_without_command=True)
def continual(
    ctx: typer.Context,
    method: str = typer.Option("hlop", help="A continual method (see `neuroplastic list`)."),
    scenario: str = typer.Option("permuted-digits", help=SCENARIO_HELP),
    tasks: int | None = typer.Option(None, help=f"Tasks of a permuted or rotated scenario, 2-{MAX_TASKS} "
                                     "(default 5 on digits and mnist1d, 10 on IDX data; split "
                                     "scenarios have one task per class pair)."),
    setting: str | None = typer.Option(None, help="task, domain or class (default: the scenario's)."),
    compare: list[str] = typer.Option([], help="Also run these methods (default hyperparameters)."),
    param: list[str] = typer.Option([], help="A hyperparameter of --method, name=value; repeatable."),
    hidden: str = typer.Option("256,256", help="Hidden widths of the MLP, comma separated."),
    model_arch: str | None = typer.Option(None, "--model-arch", help=(
        "A built-in model instead of the MLP of --hidden: cnn (PyTorch's MNIST CNN) or resnet18 "
        "(CIFAR stem), for image scenarios; mlp is that MLP.")),
    epochs: int = typer.Option(25, help="Epochs per task."),
    lr: float = typer.Option(0.01, help="SGD learning rate."),
    momentum: float = typer.Option(0.9, help="SGD momentum."),
    batch_size: int = typer.Option(32, help="Batch size."),
    seed: int = typer.Option(0, help="Seed of the permutations, initialisation and shuffling."),
    device: Device = "cpu",
    out: RunFolder = None,
    json_out: JsonOut = False,
) -> None:
    """Learn a stream of tasks one after the other; measure what is remembered (ACC, BWT, FWT)."""
    if ctx.invoked_subcommand is not None:
        return
    check_training_options(epochs=epochs, lr=lr, batch_size=batch_size, device=device)
    if not 0 <= momentum < 1:
        raise NeuroplasticError(f"--momentum must lie in [0, 1), got {momentum}")
    if tasks is not None and not 2 <= tasks <= MAX_TASKS:
        raise NeuroplasticError(f"--tasks must lie in 2-{MAX_TASKS}, got {tasks}")
    if tasks is not None and "split-" in scenario:
        raise NeuroplasticError(f"--tasks applies to permuted and rotated scenarios; {scenario} has one "
                                "task per pair of classes")
    if method in compare:
        raise NeuroplasticError(f"--compare {method} is the --method itself: compare other methods")
    if len(set(compare)) < len(compare):
        raise NeuroplasticError("--compare names a method twice")
    if setting is not None and setting not in ("task", "domain", "class"):
        raise NeuroplasticError(f"--setting must be task, domain or class, got {setting!r}")
    widths = parse_hidden(hidden)
    check_arch(model_arch, None)
    folder = run_dir("continual", out)
    check_device(device)
    from neuroplastic import registry

    for name in [method, *compare]:
        registry.get(name, kind="continual")
    params = registry.parse_params(method, kind="continual", items=param)
    registry.create(method, kind="continual", **params)  # ranges: before any data is loaded
    import torch

    from neuroplastic.continual import ContinualRecipe, run_stream
    from neuroplastic.data.streams import load_stream
    from neuroplastic.models import MLP, build_architecture

    stream = load_stream(scenario, tasks=tasks, setting=setting, seed=seed)
    recipe = ContinualRecipe(epochs=epochs, lr=lr, momentum=momentum, batch_size=batch_size, seed=seed)
    features = int(torch.tensor(stream.input_shape).prod())

    def new_model() -> torch.nn.Module:
        if model_arch in (None, "mlp"):
            return MLP(features, stream.num_outputs, hidden=widths)
        return build_architecture(model_arch, tuple(stream.input_shape), stream.num_outputs)

    results, models = {}, {}
    from neuroplastic.loop import warm_up

    with torch.random.fork_rng(devices=[]):
        example = stream[0].train.tensors
        warm_up(new_model().to(device),
                example[0][:recipe.batch_size].to(device), example[1][:recipe.batch_size].to(device),
                loss_fn=stream.loss_fn())  # not inside the first method's seconds
    for name in [method, *compare]:
        kwargs = dict(params) if name == method else {}
        instance = registry.create(name, kind="continual", **kwargs)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = new_model().to(device)
        fit_threads(model)
        with progress_bar(f"{name} on {stream.name} ({stream.setting}-IL)") as progress:
            results[name] = run_stream(model, stream, instance, recipe, progress=progress)
        models[name] = model
    metrics: dict[str, Any] = {"method": method, "scenario": stream.name, "setting": stream.setting,
                               "tasks": float(len(stream)),
                               **merge_runs(method, {name: r.metrics for name, r in results.items()})}
    print_summary(results)
    chance = stream_chance(stream)
    verdict = continual_verdict(results, method, chance)
    console.print(verdict)
    notes = continual_warnings(results, stream.setting)
    for note in notes:
        warn(note)
    from neuroplastic.evaluate.health import health_warnings

    health = health_warnings(models=models, accuracies={f"{name} (ACC)": (r.metrics["acc"], chance)
                                                        for name, r in results.items()})
    write_run(folder, command="continual",
              config={"options": options_of(ctx.params), "recipe": recipe.to_dict(), "params": params},
              metrics=metrics, report=continual_report(results, f"neuroplastic continual: {method}",
                                                       f"{stream.name}, {stream.setting}-IL", notes,
                                                       verdict=verdict, params=params),
              model=None, json_out=json_out, health=health, notes=notes)


def stream_chance(stream: Any) -> float:
    """The ACC a model guessing at random scores: the mean over tasks of 1 / (the output units
    a prediction chooses among)."""
    units = [len(e.classes) if stream.setting == "task" else stream.num_outputs for e in stream]
    return sum(1 / u for u in units) / len(units)


def print_summary(results: dict[str, ContinualResult]) -> None:
    from rich.table import Table

    table = Table("method", "ACC", "BWT", "FWT", "forgetting", "seconds")
    table.columns[0].no_wrap = True
    for name, r in results.items():
        table.add_row(name, *(f"{r.metrics[k]:.3f}" if k in r.metrics else "—"
                              for k in ("acc", "bwt", "fwt", "forgetting", "seconds")))
    console.print(table)


def continual_warnings(results: dict[str, ContinualResult], setting: str) -> list[str]:
    """Sentences for the console and the report."""
    notes = []
    if setting == "class":
        notes.append("class-incremental: without replay, regularisation and projection methods "
                     "usually end near finetuning (only the last task's classes are predicted)")
    for name, r in results.items():
        notes.extend(f"{name} {note}" for note in r.warnings)
    return notes
