"""``neuroplastic learn``: train with a local rule, beside backprop of the same network."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import typer

from neuroplastic.cli.common import (
    ARCH_HELP,
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
    parse_hidden,
    registered_names,
    write_run,
)
from neuroplastic.cli.names import LEARN_RULES
from neuroplastic.cli.output import console, warn
from neuroplastic.cli.progress import progress_tasks
from neuroplastic.cli.threads import fit_threads
from neuroplastic.errors import NeuroplasticError
from neuroplastic.runs import run_dir  # light: no torch

if TYPE_CHECKING:
    from neuroplastic.data.splits import DataSplit
    from neuroplastic.evaluate.report import Report
    from neuroplastic.local.runner import LearnResult

learn_app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)

LEARN_DATA_HELP = ("digits, mnist1d, circles, moons (generated), fashion-mnist[:<folder>], mnist:<folder>, "
                   "kmnist:<folder>, a .npz/.csv file, an image folder, or torchvision:<Name>:<root>.")


@learn_app.callback(invoke_without_command=True)
def learn(
    ctx: typer.Context,
    rule: str = typer.Option("disinhibitory", help=f"{', '.join(LEARN_RULES)}, or a method a "
                             "plug-in registers (neuroplastic list learn)."),
    data: str = typer.Option("digits", help=LEARN_DATA_HELP),
    hidden: str | None = typer.Option(None, help="Hidden widths, comma separated (default: the rule's: "
                                      "64,64 disinhibitory and backprop, 32 softhebb, 16 biprop/han)."),
    epochs: int | None = typer.Option(None, help="Epochs (default: the rule's; softhebb: readout "
                                      "epochs, the Hebbian phase takes --param hebbian_epochs=5)."),
    lr: float | None = typer.Option(None, help="Adam learning rate (default: the rule's)."),
    batch_size: int | None = typer.Option(None, help="Batch size (default: the rule's)."),
    param: list[str] = typer.Option([], help="A hyperparameter of the rule, name=value; repeatable "
                                    "(e.g. variant=lin-thresh, solver=rk4, dt=0.001, horizon=2)."),
    compare: bool = typer.Option(True, help="Also train the same network by backprop."),
    robustness_samples: int | None = typer.Option(
        None, help="Test samples of the robustness evaluation (FGSM, PGD, noise): a class-"
        "stratified subset drawn with --seed (default: the whole test split; 0 skips it). "
        "Accuracies use the whole test split either way."),
    model_factory: str | None = typer.Option(None, help=FACTORY_HELP + " biprop/han/backprop only."),
    model_arch: str | None = typer.Option(None, help=ARCH_HELP),
    standardize: bool = typer.Option(False, help=STANDARDIZE_HELP),
    seed: int = typer.Option(0, help="Seed of the data split, initialisation and shuffling."),
    device: Device = "cpu",
    out: RunFolder = None,
    json_out: JsonOut = False,
) -> None:
    """Train a network with a local learning rule and compare it with backprop."""
    if ctx.invoked_subcommand is not None:
        return
    check_training_options(epochs=epochs, lr=lr, batch_size=batch_size, device=device)
    widths = parse_hidden(hidden)
    registered_names("learn", option="--rule", value=rule)
    from neuroplastic import registry

    folder = run_dir("learn", out)
    check_arch(model_arch, model_factory)
    check_factory(model_factory)

    method_class = registry.get(rule, kind="learn")
    if (model_factory is not None or model_arch is not None) and method_class.own_network:
        option = "--model-factory" if model_factory is not None else "--model-arch"
        raise NeuroplasticError(f"{option}: {rule} trains its own network type (E/I pairs, "
                                "Hebbian blocks); it applies to methods that train any network")
    params: dict[str, Any] = registry.parse_params(rule, kind="learn", items=param)
    method = registry.create(rule, kind="learn", **params)  # every range checked before any data
    from neuroplastic.local.runner import learn as run_learn

    split = load_split(data, seed=seed, standardize=standardize)
    check_robustness_samples(split, robustness_samples, seed=seed)
    factory = None
    if model_factory is not None or model_arch is not None:
        from neuroplastic.cli.common import resolve_factory

        factory = resolve_factory(model_factory, split, arch=model_arch)
    else:
        fit_threads(method.network(split, widths or method.defaults.hidden))
    with progress_tasks() as start:
        result = run_learn(rule, split, hidden=widths, epochs=epochs, lr=lr, batch_size=batch_size,
                           seed=seed, params=params, compare=compare, device=device, factory=factory,
                           robustness_samples=robustness_samples, progress=start)
    metrics: dict[str, Any] = {"rule": rule, "data": split.name, **result.metrics()}
    print_summary(result)
    if robustness_samples not in (None, 0, len(split.test)):
        console.print(f"robustness measured on {robustness_samples} of the {len(split.test)} test samples "
                      f"(class-stratified, seed {seed})", highlight=False)
    chance = 1 / split.num_classes
    console.print(learn_verdict(result, chance))
    for note in result.notes:
        warn(note)
    options = {**options_of(ctx.params), "data": absolute_data(data),
               "model_factory": absolute_factory(model_factory)}
    from neuroplastic.evaluate.health import health_warnings

    health = health_warnings(models={name: run.model for name, run in result.runs.items()},
                             accuracies={f"{name} (test)": (run.metrics["test_acc"], chance)
                                         for name, run in result.runs.items() if "test_acc" in run.metrics})
    write_run(folder, command="learn", config={"options": options, "params": params}, metrics=metrics,
              report=learn_report(result, f"neuroplastic learn: {rule} on {split.name}", chance=chance,
                                  params=params),
              model=result.runs[rule].model, json_out=json_out, health=health,
              notes=result.notes)


def check_robustness_samples(split: DataSplit, samples: int | None, *, seed: int) -> None:
    """Before any training: ``--robustness-samples`` fits the test split.

    Raises:
        NeuroplasticError: naming the option, if it does not.
    """
    from neuroplastic.local.runner import robustness_data

    try:
        robustness_data(split, samples, seed=seed)
    except NeuroplasticError as err:
        raise NeuroplasticError(f"--robustness-samples: {err}") from None


def print_summary(result: LearnResult) -> None:
    from rich.table import Table

    table = Table("network", "test acc", "train acc", "FGSM 0.2", "PGD 0.2", "noise 0.3", "seconds")
    table.columns[0].no_wrap = True  # names in full, never "disinhibi…"
    for name, run in result.runs.items():
        m = run.metrics
        cells = [m.get(k) for k in ("test_acc", "train_acc", "robust.fgsm.0.2", "robust.pgd.0.2",
                                    "robust.noise.0.3", "seconds")]
        table.add_row(name, *("—" if v is None else f"{v:.3f}" if i < 5 else f"{v:.1f}"
                              for i, v in enumerate(cells)))
    console.print(table)
    aligned = {k: v for k, v in result.runs[result.rule].metrics.items()
               if k.startswith("alignment.") and not k.endswith(".sign")}
    if aligned:
        console.print("alignment with backprop (cosine): " +
                      ", ".join(f"{k.removeprefix('alignment.')} {v:.3f}" for k, v in aligned.items()))


def learn_verdict(result: LearnResult, chance: float) -> str:
    """One sentence: how the rule did against backprop of the same network."""
    rule = result.rule
    mine = result.runs[rule].metrics["test_acc"]
    text = f"{rule} reached test accuracy {mine:.3f} (chance {chance:.3f})"
    if result.baseline is not None:
        bp = result.runs[result.baseline].metrics["test_acc"]
        gap = (mine - bp) * 100
        versus = "level with" if abs(gap) <= 1 else "below" if gap < 0 else "above"
        text += (f", {versus} {result.baseline} of the same network on the same batches ({bp:.3f}, "
                 f"{gap:+.1f} points)")
    for name in result.controls:
        text += f"; {name.replace('_', ' ')} of the same width: {result.runs[name].metrics['test_acc']:.3f}"
    return text + "."


def learn_report(result: LearnResult, title: str, *, chance: float, params: dict[str, Any]) -> Report:
    """report.html: the verdict, the headline table, every metric, accuracy curves,
    robustness curves, alignment per layer."""
    from neuroplastic.evaluate.report import Report, grouped_bars, line_plot

    report = Report(title)
    for note in result.notes:
        report.banner(note)
    report.text(learn_verdict(result, chance))
    headline = ("test_acc", "train_acc", "seconds")
    report.table("Headline", ["network", *headline],
                 [[name, *(run.metrics.get(k, float("nan")) for k in headline)]
                  for name, run in result.runs.items()])
    if params:
        report.table("Hyperparameters given (--param)", ["name", "value"],
                     [[k, str(v)] for k, v in params.items()])
    keys = sorted({k for run in result.runs.values() for k in run.metrics} - set(headline))
    rows = [[k, *(run.metrics.get(k, float("nan")) for run in result.runs.values())] for k in keys]
    report.table("Every metric", ["metric", *result.runs], rows)
    curves = {}
    for name, run in result.runs.items():
        if run.curve:
            epochs = [float(e) for e, _, _ in run.curve]
            curves[f"{name} test"] = (epochs, [t for _, _, t in run.curve])
            curves[f"{name} train"] = (epochs, [t for _, t, _ in run.curve])
    if curves:
        title = "Accuracy after every epoch" + (f" ({result.curve_note})" if result.curve_note else "")
        report.figure(title,
                      line_plot(curves, xlabel="epoch", ylabel="accuracy"))
    axes = (("fgsm", "FGSM eps (L-inf)"), ("pgd", "PGD eps (L-inf)"), ("noise", "Gaussian noise sigma"))
    for kind, label in axes:
        lines = {}
        for name, run in result.runs.items():
            if run.robustness is not None:
                levels = getattr(run.robustness, kind)
                lines[name] = ([0.0, *levels], [run.robustness.clean, *levels.values()])
        if lines:
            report.figure(f"Test accuracy under {kind.upper() if kind != 'noise' else 'noise'}",
                          line_plot(lines, xlabel=label, ylabel="test accuracy"))
    history = result.runs[result.rule].alignment
    if history:
        layers = list(history[-1])
        report.figure("Alignment of the local update with backprop's gradient (last epoch)", grouped_bars(
            {"cosine": [history[-1][k][0] for k in layers],
             "sign agreement": [history[-1][k][1] for k in layers]},
            [k.removesuffix(".weight") for k in layers], ylabel="value"))
        report.figure("Cosine with backprop over training", line_plot(
            {k.removesuffix(".weight"): ([float(i + 1) for i in range(len(history))],
                                         [h[k][0] for h in history])
             for k in layers}, xlabel="epoch", ylabel="cosine"))
    report.text("test_acc / train_acc: accuracy of the trained network; robust.fgsm.<eps> and "
                "robust.pgd.<eps>: test accuracy under L-inf attacks (PGD: 20 steps, 2 random restarts); "
                "robust.noise.<sigma>: under Gaussian noise; alignment.<layer>: cosine between the rule's "
                "update and backprop's gradient on a validation batch (.sign: fraction of weights whose "
                "update has backprop's sign).")
    return report
