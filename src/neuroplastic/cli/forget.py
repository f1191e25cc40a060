"""``neuroplastic forget``: forget a class, samples, a sub-class or poisoned data."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from neuroplastic import registry
from neuroplastic.cli.common import console, options_of, resolve_factory, write_run
from neuroplastic.data import (
    COARSE_NAMES,
    SCENARIOS,
    DataSplit,
    ForgetScenario,
    coarse_label,
    corrective,
    full_class,
    given_indices,
    load_data,
    random_samples,
    sub_class,
)
from neuroplastic.errors import NeuroplasticError
from neuroplastic.evaluate.report import Report, grouped_bars, tradeoff
from neuroplastic.forget.experiment import ForgetRun, run_forget, trained_model
from neuroplastic.io import load_model_weights
from neuroplastic.models import seeded_model
from neuroplastic.runs import run_dir
from neuroplastic.training import TrainConfig

forget_app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)


def parse_indices(text: str) -> list[int]:
    """Comma-separated integers, or the path of a file of whitespace/comma-separated integers."""
    path = Path(text)
    if path.is_file():
        text = path.read_text(encoding="utf-8")
    try:
        return [int(tok) for tok in text.replace(",", " ").split()]
    except ValueError:
        raise NeuroplasticError(f"forget indices must be integers, got {text[:40]!r}") from None


def build_scenario(data: DataSplit, *, scenario: str | None, forget_class: int | None,
                   forget_indices: str | None, fraction: float, target_class: int,
                   poison_fraction: float, identified: float, seed: int) -> ForgetScenario:
    """The forgetting request the options describe."""
    if scenario is None:
        scenario = "indices" if forget_indices else "class"
    if scenario not in SCENARIOS:
        raise NeuroplasticError(f"unknown scenario {scenario!r}; choose from {', '.join(SCENARIOS)}")
    if scenario == "class":
        if forget_class is None:
            raise NeuroplasticError("the class scenario needs --forget-class")
        return full_class(data, forget_class)
    if scenario == "indices":
        if not forget_indices:
            raise NeuroplasticError("the indices scenario needs --forget-indices")
        return given_indices(data, parse_indices(forget_indices))
    if scenario == "random":
        return random_samples(data, fraction=fraction, seed=seed)
    if scenario == "subclass":
        if data.name != "digits":
            raise NeuroplasticError("the subclass scenario is defined for the digits data only")
        fine = 8 if forget_class is None else forget_class
        return sub_class(data, fine, coarse_of={d: coarse_label(d) for d in range(10)},
                         coarse_names=COARSE_NAMES)
    return corrective(data, target=target_class, poison_fraction=poison_fraction,
                      identified_fraction=identified, seed=seed)


def metrics_table(metrics: dict[str, Any], columns: list[str]) -> Table:
    """Rows = metrics, columns = models, from the flat metrics dict."""
    table = Table("metric", *columns, title=metrics.get("description"))
    keys = ["forget_acc", "retain_acc", "test_acc", "forget_test_acc", "attack_success", "mia",
            "mia_loss", "seconds"]
    for key in keys:
        values = [metrics.get(f"{col}.{key}") for col in columns]
        if all(v is None for v in values):
            continue
        table.add_row(key, *("" if v is None else f"{v:.3f}" for v in values))
    return table


def forget_report(run: ForgetRun, columns: list[str], class_names: list[str]) -> Report:
    """report.html of a forgetting run."""
    metrics = run.metrics
    report = Report(f"neuroplastic forget: {metrics['description']} ({metrics['method']})")
    keys = ["forget_acc", "retain_acc", "test_acc", "forget_test_acc", "attack_success", "mia",
            "mia_loss", "seconds"]
    rows = [[k, *(metrics.get(f"{c}.{k}", float("nan")) for c in columns)] for k in keys
            if any(f"{c}.{k}" in metrics for c in columns)]
    report.table("Results", ["metric", *columns], rows)
    report.figure("Per-class test accuracy",
                  grouped_bars(run.class_acc, class_names, ylabel="test accuracy"))
    curves: dict[str, list[tuple[float, float, float]]] = {}
    if run.sweep:
        curves["pure dampening (test split, report only)"] = run.sweep
    for lam in sorted({t["lam"] for t in run.trace}, reverse=True):
        # retain-sample accuracy is only measured for candidates that could be chosen
        curves[f"{metrics['method']} search, lambda={lam:g} (retain sample)"] = [
            (t["alpha"], t["forget_acc"], t.get("retain_acc", float("nan")))
            for t in run.trace if t["lam"] == lam]
    if curves:
        report.figure("Forget vs retain trade-off across alpha",
                      tradeoff(curves, xlabel="forget accuracy", ylabel="retained accuracy"))
    choices = [[k.removeprefix("choice."), v] for k, v in metrics.items() if k.startswith("choice.")]
    if choices:
        report.table("Choices the method made", ["setting", "value"], choices)
    report.text("Retrain = fresh initialisation trained with the same recipe on the retain set. "
                "MIA = fraction of forget samples an attacker calls members (lower is better; "
                "retrain is the target).")
    return report


@forget_app.callback(invoke_without_command=True)
def forget(
    ctx: typer.Context,
    data: str = typer.Option("digits", help="digits, a .npz/.csv file, an image folder, "
                             "or torchvision:<Name>:<root>."),
    model: Path | None = typer.Option(None, help="Trained weights (.safetensors); default: "
                                         "train (and cache) the reference model."),
    model_factory: str | None = typer.Option(
        None, help="pkg.module:function returning your nn.Module (called with no arguments)."),
    scenario: str | None = typer.Option(None, help=f"One of {', '.join(SCENARIOS)}."),
    forget_class: int | None = typer.Option(None, help="Class to forget (fine label for subclass)."),
    forget_indices: str | None = typer.Option(None, help="Training rows to forget: 1,5,9 or a file."),
    fraction: float = typer.Option(0.1, help="Random scenario: fraction of samples to forget."),
    target_class: int = typer.Option(0, help="Corrective scenario: the backdoor's target label."),
    poison_fraction: float = typer.Option(0.1, help="Corrective: fraction of samples poisoned."),
    identified: float = typer.Option(0.5, help="Corrective: fraction of poisoned samples identified."),
    method: str = typer.Option("ssd-auto", help="A forget method (see `neuroplastic list`)."),
    compare: list[str] = typer.Option([], help="Also run these methods for comparison."),
    alpha: float | None = typer.Option(None, help="SSD selection threshold (ssd, lfssd)."),
    lam: float | None = typer.Option(None, help="SSD dampening constant lambda."),
    retrain: bool = typer.Option(True, help="Also retrain from scratch as the reference."),
    epochs: int = typer.Option(30, help="Training recipe: epochs (base model and retrain)."),
    lr: float = typer.Option(1e-3, help="Training recipe: Adam learning rate."),
    batch_size: int = typer.Option(64, help="Training recipe and importance batch size."),
    seed: int = typer.Option(0, help="Seed of splits, scenarios and initialisation."),
    device: str = typer.Option("cpu", help="torch device, e.g. cpu or cuda."),
    out: Path | None = typer.Option(None, help="Run folder (default runs/forget-<time>)."),
    json_out: bool = typer.Option(False, "--json", help="Also print metrics.json to stdout."),
) -> None:
    """Forget a class, samples, a sub-class or poisoned data; compare with retraining."""
    if ctx.invoked_subcommand is not None:
        return
    options = options_of(ctx.params)
    method_kwargs: dict[str, Any] = {}
    if alpha is not None:
        if method == "ssd-auto":
            raise NeuroplasticError("ssd-auto chooses alpha itself; use --method ssd to fix alpha")
        method_kwargs["alpha"] = alpha
    if lam is not None:
        method_kwargs["lam"] = lam
    for name in [method, *compare]:
        registry.get(name, kind="forget")
    config = TrainConfig(epochs=epochs, lr=lr, batch_size=batch_size, seed=seed)
    split = load_data(data, seed=seed)
    request = build_scenario(split, scenario=scenario, forget_class=forget_class,
                             forget_indices=forget_indices, fraction=fraction,
                             target_class=target_class, poison_fraction=poison_fraction,
                             identified=identified, seed=seed)
    factory = resolve_factory(model_factory, request.data)
    folder = run_dir("forget", out)
    if model is not None:
        net = load_model_weights(seeded_model(factory, seed, device), model)
        train_seconds = float("nan")
    else:
        net, train_seconds = trained_model(request.data, factory, config, device=device,
                                           description="training the base model (cached)")
    with console.status("") as status:
        run = run_forget(request, net, method=method, method_kwargs=method_kwargs, config=config,
                         factory=factory, retrain=retrain, original_seconds=train_seconds,
                         compare=tuple(compare), status=lambda msg: status.update(msg))
    columns = ["original", "unlearned", *(["retrain"] if retrain else []), *compare]
    console.print(metrics_table(run.metrics, columns))
    if "speedup_vs_retrain" in run.metrics:
        console.print(f"speed-up vs retrain: {run.metrics['speedup_vs_retrain']:.1f}x; "
                      f"cached request: {run.metrics['cached_request_seconds']:.3f}s")
    write_run(folder, command="forget",
              config={"options": options, "train": config.to_dict(), "method_kwargs": method_kwargs},
              metrics=run.metrics, report=forget_report(run, columns, request.data.class_names),
              model=run.unlearned, json_out=json_out)
