"""``neuroplastic forget``: forget a class, samples, a sub-class or poisoned data."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from neuroplastic.cli.common import (
    ARCH_HELP,
    DATA_HELP,
    STANDARDIZE_HELP,
    Device,
    JsonOut,
    RunFolder,
    check_arch,
    check_factory,
    check_training_options,
    load_split,
    options_of,
    require_fraction,
    require_positive,
    resolve_factory,
    write_run,
)
from neuroplastic.cli.names import SCENARIOS
from neuroplastic.cli.output import console, warn
from neuroplastic.cli.progress import progress_bar
from neuroplastic.errors import NeuroplasticError
from neuroplastic.runs import run_dir  # light: no torch

if TYPE_CHECKING:
    from rich.table import Table

    from neuroplastic.data import DataSplit, ForgetScenario
    from neuroplastic.evaluate.report import Report
    from neuroplastic.forget.experiment import ForgetRun

forget_app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)


def parse_indices(text: str) -> list[int]:
    """Comma-separated row numbers, or the path of a file of whitespace/comma-separated ones."""
    path = Path(text)
    if path.is_file():
        return read_rows(path)
    return integers(text.replace(",", " ").split(), source="--forget-indices")


def integers(tokens: list[str], *, source: str) -> list[int]:
    if not tokens:
        raise NeuroplasticError(f"{source} is empty: name at least one row")
    try:
        return [int(tok) for tok in tokens]
    except ValueError:
        bad = next(tok for tok in tokens if not tok.lstrip("-").isdigit())
        raise NeuroplasticError(f"{source}: rows must be integers, got {bad[:40]!r}") from None


def read_lines(path: Path, what: str) -> list[str]:
    """The non-blank lines of a text file, stripped."""
    if not path.is_file():
        raise NeuroplasticError(f"{what} file not found: {path}")
    try:
        return [line.strip() for line in path.read_text(encoding="utf-8-sig").splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as err:
        raise NeuroplasticError(f"cannot read {what} file {path}: {err}") from None


def read_rows(path: Path) -> list[int]:
    """Row numbers from a file, whitespace or comma separated (one per line is usual)."""
    tokens = " ".join(read_lines(path, "rows")).replace(",", " ").split()
    return integers(tokens, source=str(path))


def build_scenario(data: DataSplit, *, scenario: str | None, forget_class: int | None,
                   rows: list[int] | None, ids: list[str] | None, fraction: float,
                   target_class: int, poison_fraction: float, identified: float,
                   seed: int) -> ForgetScenario:
    """The forgetting request the options describe."""
    from neuroplastic.data import (
        COARSE_NAMES,
        coarse_label,
        corrective,
        full_class,
        given_rows,
        random_samples,
        rows_of_ids,
        sub_class,
    )

    if scenario is None:
        scenario = "indices" if rows is not None or ids is not None else "class"
    if scenario == "class":
        if forget_class is None:
            raise NeuroplasticError("the class scenario needs --forget-class")
        return full_class(data, forget_class)
    if scenario == "indices":
        if rows is None and ids is None:
            raise NeuroplasticError("the indices scenario needs --forget-indices, --forget-rows or "
                                    "--forget-ids")
        return given_rows(data, rows if rows is not None else rows_of_ids(data, ids or []))
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
    from rich.table import Table

    table = Table("metric", *columns, title=metrics.get("description"))
    keys = ["forget_acc", "retain_acc", "test_acc", "forget_test_acc", "attack_success", "mia",
            "mia_loss", "mia_auc", "ulira.auc", "ulira.tpr_at_1fpr", "seconds"]
    for key in keys:
        values = [metrics.get(f"{col}.{key}") for col in columns]
        if all(v is None for v in values):
            continue
        table.add_row(key, *("" if v is None else f"{v:.3f}" for v in values))
    return table


CHOICE_WORDS = {
    "alpha": "selection threshold alpha (I_f > alpha * I_D)",
    "lam": "dampening constant lambda",
    "target_forget_acc": "forget accuracy aimed at",
    "goal_forget_acc": "forget accuracy the search had to reach (target + tolerance)",
    "repair_goal_forget_acc": "forget accuracy a repair must hold",
    "label_free": "searched again with the label-free importance",
    "repaired": "repaired by a retain finetune afterwards",
    "repair_redampened": "times the repair dampened again",
    "repair_ascent_steps": "repair steps that also ascended the forget loss",
    "repair_reverted": "repair reverted to its last state that met the goal",
    "selected": "parameters selected",
    "selected_fraction": "fraction of parameters selected",
    "dampened": "dampened any parameter",
    "target_reached": "reached the forget target",
    "cache_hit": "full-data importance came from the cache",
}
YES_NO = {"repaired", "dampened", "target_reached", "cache_hit", "label_free", "repair_reverted"}


def run_rows(metrics: dict[str, Any]) -> list[str]:
    rows = metrics.get("forgotten_rows", "")
    return rows.split(",") if rows else []


def choice_in_words(key: str, value: object) -> list[object]:
    """One row of the choices table: what the setting means and its value in words."""
    words = CHOICE_WORDS.get(key, key.replace("_", " "))
    if key in YES_NO:
        return [words, "yes" if value else "no"]
    return [words, value]


def forget_report(run: ForgetRun, columns: list[str], class_names: list[str],
                  notes: list[str] = ()) -> Report:
    """report.html of a forgetting run: warnings first, results, per-class accuracy with the
    forgotten class marked, the forget-vs-retain trade-off with the chosen point, the cost of
    each phase, and the method's choices in words."""
    from neuroplastic.evaluate.report import Report, duration, grouped_bars, tradeoff

    metrics = run.metrics
    report = Report(f"neuroplastic forget: {metrics['description']} ({metrics['method']})")
    for note in notes:
        report.banner(note)
    keys = ["forget_acc", "retain_acc", "test_acc", "forget_test_acc", "attack_success", "mia",
            "mia_loss", "mia_auc", "ulira.auc", "ulira.auc_std", "ulira.tpr_at_1fpr", "ulira.tpr_at_1fpr_std",
            "ulira.tpr_at_5fpr", "ulira.tpr_at_5fpr_std", "ulira.seconds"]
    rows = [[k, *(metrics.get(f"{c}.{k}", float("nan")) for c in columns)] for k in keys
            if any(f"{c}.{k}" in metrics for c in columns)]
    report.table("Results", ["metric", *columns], rows)
    marked = [class_names.index(name) for name in class_names
              if metrics.get("scenario") in ("class", "subclass")
              and metrics["description"].endswith(f" {name}")]
    report.figure("Per-class test accuracy",
                  grouped_bars(run.class_acc, class_names, ylabel="test accuracy", marked=marked))
    curves: dict[str, list[tuple[float, float, float]]] = {}
    if run.sweep:
        curves["pure dampening (test split, report only)"] = run.sweep
    for lam in sorted({t["lam"] for t in run.trace}, reverse=True):
        # retain-sample accuracy is only measured for candidates that could be chosen
        curves[f"{metrics['method']} search, lambda={lam:g} (retain sample)"] = [
            (t["alpha"], t["forget_acc"], t.get("retain_acc", float("nan")))
            for t in run.trace if t["lam"] == lam]
    if curves:
        chosen = (metrics.get("unlearned.forget_acc"), metrics.get("unlearned.test_acc"))
        star = None
        if all(isinstance(v, float) for v in chosen):
            alpha = metrics.get("choice.alpha")
            label = f"chosen (alpha={alpha:.3g})" if isinstance(alpha, float) else "result"
            star = (chosen[0], chosen[1], label + ", test split")
        report.figure("Forget vs retain trade-off across alpha",
                      tradeoff(curves, xlabel="forget accuracy (lower forgets more)",
                               ylabel="retained accuracy", chosen=star))
    cost = [[c, duration(metrics.get(f"{c}.seconds", float("nan")))] for c in columns
            if isinstance(metrics.get(f"{c}.seconds"), float)]
    cost += [[k.removeprefix("unlearned.").removesuffix("_seconds").replace("_", " "), duration(v)]
             for k, v in metrics.items()
             if k.startswith("unlearned.") and k.endswith("_seconds") and isinstance(v, float)]
    if isinstance(metrics.get("speedup_vs_retrain"), float):
        cost.append(["speed-up vs retrain", f"{metrics['speedup_vs_retrain']:.1f}x"])
    if isinstance(metrics.get("cached_request_seconds"), float):
        cost.append(["same request, full-data importance cached",
                     duration(metrics["cached_request_seconds"])])
    report.table("Cost", ["phase", "time"], cost)
    report.text(f"Forgotten records ({len(run_rows(metrics))}, rows of the data file, 0-based): "
                + (", ".join(run_rows(metrics)) or "none"))
    choices = [choice_in_words(k.removeprefix("choice."), v) for k, v in metrics.items()
               if k.startswith("choice.")]
    if choices:
        report.table("Choices the method made", ["setting", "value"], choices)
    mia_note = ("MIA = fraction of forget samples the entropy attack calls members; retrain is the "
                "target (closer to it is better). ") if metrics.get("mia_informative") == 1.0 else (
                "MIA = fraction of forget samples the entropy attack calls members; on this model the "
                "attack cannot tell members from non-members (see the banner), so these figures do not "
                "rank the methods. ")
    ulira_note = ("U-LiRA AUC = how well the per-example likelihood-ratio attack tells the forgotten "
                  "samples from never-seen ones: 0.5 is a model that never saw them (the retrained "
                  "one scores about that); 'original' is the attack's power before unlearning. As "
                  "Hayes et al., the models attacked are trained exactly as the shadows: each of the "
                  f"{int(metrics.get('ulira.shadows', 0))} shadows in turn, with the statistics of the "
                  "others, each unlearning a request of "
                  f"{int(metrics.get('ulira.request_size', 0))} samples; figures are mean over them, "
                  "'_std' their standard deviation. ") if "original.ulira.auc" in metrics else ""
    report.text("Retrain = fresh initialisation trained with the same recipe on the retain set. "
                + mia_note + ulira_note)
    return report


def check_request_options(*, forget_class: int | None, target_class: int | None, fraction: float,
                          poison_fraction: float, identified: float, mia: str, shadows: int | None,
                          ulira_variance: str | None, mia_nonmembers: str) -> None:
    """One ``error:`` line for a request or attack option out of range, before any work."""
    for option, value in (("--forget-class", forget_class), ("--target-class", target_class)):
        if value is not None and value < 0:
            raise NeuroplasticError(f"{option} must be >= 0, got {value}")
    require_fraction("--fraction", fraction)
    require_fraction("--poison-fraction", poison_fraction)
    if not 0 < identified <= 1:
        raise NeuroplasticError(f"--identified must lie in (0, 1], got {identified}")
    if mia not in ("basic", "ulira"):
        raise NeuroplasticError(f"--mia must be basic or ulira, got {mia!r}")
    if shadows is not None and mia != "ulira":
        raise NeuroplasticError("--shadows applies with --mia ulira")
    if ulira_variance is not None and mia != "ulira":
        raise NeuroplasticError("--ulira-variance applies with --mia ulira")
    if mia_nonmembers not in ("test-retain", "validation"):
        raise NeuroplasticError(f"--mia-nonmembers must be test-retain or validation, got {mia_nonmembers!r}")


@forget_app.callback(invoke_without_command=True)
@forget_app.command("class")
def forget(
    ctx: typer.Context,
    data: str = typer.Option("digits", help=DATA_HELP),
    model: Path | None = typer.Option(None, help="Trained weights (.safetensors); default: "
                                         "train (and cache) the reference model."),
    model_factory: str | None = typer.Option(
        None, help="pkg.module:function returning your nn.Module (called with no arguments)."),
    model_arch: str | None = typer.Option(None, help=ARCH_HELP),
    scenario: str | None = typer.Option(None, help=f"One of {', '.join(SCENARIOS)}."),
    forget_class: int | None = typer.Option(None, help="Class to forget (fine label for subclass)."),
    forget_indices: str | None = typer.Option(
        None, help="Rows of the data file to forget, 0-based in file order: 1,5,9 (or a file)."),
    forget_rows: Path | None = typer.Option(None, help="A file of row numbers to forget, one per line."),
    id_column: str | None = typer.Option(None, help="CSV: the column that names each record."),
    forget_ids: Path | None = typer.Option(None, help="A file of record ids to forget, one per line "
                                           "(with --id-column)."),
    fraction: float = typer.Option(0.1, help="Random scenario: fraction of samples to forget."),
    target_class: int = typer.Option(0, help="Corrective scenario: the backdoor's target label."),
    poison_fraction: float = typer.Option(0.1, help="Corrective: fraction of samples poisoned."),
    identified: float = typer.Option(0.5, help="Corrective: fraction of poisoned samples identified."),
    method: str = typer.Option("ssd-auto", help="A forget method (see `neuroplastic list`)."),
    compare: list[str] = typer.Option([], help="Also run these methods for comparison."),
    param: list[str] = typer.Option([], help="A hyperparameter of --method, name=value; repeatable "
                                    "(typed and checked; `neuroplastic list --json` shows them)."),
    alpha: float | None = typer.Option(None, help="SSD selection threshold (ssd, lfssd); the same as "
                                       "--param alpha=..."),
    lam: float | None = typer.Option(None, help="SSD dampening constant lambda (--param lam=...)."),
    retrain: bool = typer.Option(True, help="Also retrain from scratch as the reference."),
    epochs: int = typer.Option(30, help="Training recipe: epochs (base model and retrain)."),
    lr: float = typer.Option(1e-3, help="Training recipe: Adam learning rate."),
    batch_size: int = typer.Option(64, help="Training recipe and importance batch size."),
    seed: int = typer.Option(0, help="Seed of splits, scenarios and initialisation."),
    device: Device = "cpu",
    out: RunFolder = None,
    standardize: bool = typer.Option(False, help=STANDARDIZE_HELP),
    ssd_full: str = typer.Option("published", help="Where ssd and lfssd take the full-data "
                                 "importance from: published (retain then forget, re-batched, as the "
                                 "reference) or train (the training split in its order)."),
    mia: str = typer.Option("basic", help="basic (entropy and loss attacks) or ulira (adds the "
                            "per-example likelihood-ratio attack with shadow models)."),
    shadows: int | None = typer.Option(None, help="U-LiRA: shadow models, even, >= 6 (default 16); "
                                       "each is attacked in turn with the others' statistics."),
    ulira_variance: str | None = typer.Option(None, help="U-LiRA variance: pooled (default below 64 "
                                              "shadows), global (LiRA's fixed variance) or per_example."),
    mia_nonmembers: str = typer.Option("test-retain", help="Non-members of the entropy and loss "
                                       "attacks: test-retain or validation (the SSD reference's)."),
    json_out: JsonOut = False,
) -> None:
    """Forget a class, samples, a sub-class or poisoned data; compare with retraining."""
    if ctx.invoked_subcommand is not None:
        given = [name for name in ctx.params
                 if getattr(ctx.get_parameter_source(name), "name", "") == "COMMANDLINE"]
        if given:
            option = "--" + given[0].replace("_", "-").replace("json-out", "json")
            raise NeuroplasticError(f"{option} is an option of `neuroplastic forget` (class and sample "
                                    f"requests), not of `forget {ctx.invoked_subcommand}`: give "
                                    f"`forget {ctx.invoked_subcommand}`'s own options after it")
        return
    options = options_of(ctx.params)
    method_kwargs: dict[str, Any] = {}
    if alpha is not None:
        from neuroplastic import registry
        from neuroplastic.params import keyword_parameters

        if "alpha" not in keyword_parameters(registry.get(method, kind="forget")):
            raise NeuroplasticError(f"{method} takes no alpha (ssd-auto chooses alpha itself); use "
                                    "--method ssd to fix alpha")
        require_positive("--alpha", alpha)
        method_kwargs["alpha"] = alpha
    if lam is not None:
        require_positive("--lam", lam)
        method_kwargs["lam"] = lam
    if scenario is not None and scenario not in SCENARIOS:
        raise NeuroplasticError(f"unknown scenario {scenario!r}; choose from {', '.join(SCENARIOS)}")
    given = [name for name, value in (("--forget-indices", forget_indices), ("--forget-rows", forget_rows),
                                      ("--forget-ids", forget_ids)) if value is not None]
    if len(given) > 1:
        raise NeuroplasticError(f"name the records once: {' and '.join(given)} were both given")
    if forget_ids is not None and id_column is None:
        raise NeuroplasticError("--forget-ids needs --id-column (the CSV column holding the ids)")
    rows = parse_indices(forget_indices) if forget_indices is not None else \
        read_rows(forget_rows) if forget_rows is not None else None
    ids = read_lines(forget_ids, "ids") if forget_ids is not None else None
    if ids is not None and not ids:
        raise NeuroplasticError(f"{forget_ids} names no id")
    check_request_options(forget_class=forget_class, target_class=target_class, fraction=fraction,
                          poison_fraction=poison_fraction, identified=identified, mia=mia,
                          shadows=shadows, ulira_variance=ulira_variance, mia_nonmembers=mia_nonmembers)
    check_training_options(epochs=epochs, lr=lr, batch_size=batch_size, device=device)
    from neuroplastic.forget.experiment import ForgetOptions

    shadow_count = 16 if shadows is None else shadows
    forget_options = ForgetOptions(ssd_full=ssd_full, nonmembers=mia_nonmembers,
                                   ulira_shadows=shadow_count if mia == "ulira" else None,
                                   ulira_variance=ulira_variance)
    if model is not None and not model.is_file():
        raise NeuroplasticError(f"checkpoint not found: {model}")
    if method in compare:
        raise NeuroplasticError(f"--compare {method} is the --method itself: compare other methods")
    if len(set(compare)) < len(compare):
        raise NeuroplasticError("--compare names a method twice")
    from neuroplastic import registry

    baselines = [name for name in compare if registry.entry(name, kind="forget").baseline]
    if retrain and baselines:
        raise NeuroplasticError(f"--compare {baselines[0]}: retraining always runs beside the method "
                                "(--no-retrain turns it off)")
    folder = run_dir("forget", out)
    check_arch(model_arch, model_factory)
    check_factory(model_factory)

    for name in [method, *compare]:
        registry.get(name, kind="forget")
    typed = registry.parse_params(method, kind="forget", items=param)
    for key in set(typed) & set(method_kwargs):
        raise NeuroplasticError(f"{key} is given twice: as --{key} and as --param {key}")
    method_kwargs.update(typed)
    registry.create(method, kind="forget", **method_kwargs)  # ranges: before any training

    from neuroplastic.forget.experiment import run_forget, trained_model
    from neuroplastic.io import load_model_weights
    from neuroplastic.models import seeded_model
    from neuroplastic.training import TrainConfig

    config = TrainConfig(epochs=epochs, lr=lr, batch_size=batch_size, seed=seed)
    split = load_split(data, seed=seed, standardize=standardize, id_column=id_column)
    request = build_scenario(split, scenario=scenario, forget_class=forget_class,
                             rows=rows, ids=ids, fraction=fraction,
                             target_class=target_class, poison_fraction=poison_fraction,
                             identified=identified, seed=seed)
    factory = resolve_factory(model_factory, request.data, arch=model_arch)
    if model is not None:
        net = load_model_weights(seeded_model(factory, seed, device), model)
        train_seconds = float("nan")
    else:
        with progress_bar("training the base model (cached)") as progress:
            net, train_seconds = trained_model(request.data, factory, config, device=device,
                                               progress=progress)
    with console.status("") as status:
        run = run_forget(request, net, method=method, method_kwargs=method_kwargs, config=config,
                         factory=factory, retrain=retrain, original_seconds=train_seconds,
                         compare=tuple(compare), options=forget_options,
                         status=lambda msg: status.update(msg))
    columns = ["original", "unlearned", *(["retrain"] if retrain else []), *compare]
    console.print(metrics_table(run.metrics, columns))
    if "speedup_vs_retrain" in run.metrics:
        cached = run.metrics.get("cached_request_seconds")
        console.print(f"speed-up vs retrain: {run.metrics['speedup_vs_retrain']:.1f}x"
                      + (f"; cached request: {cached:.3f}s" if cached is not None else ""))
    notes = run.warnings
    for note in notes:
        warn(note)
    from neuroplastic.evaluate.health import health_warnings

    health = health_warnings(models={"unlearned model": run.unlearned}, accuracies={
        "unlearned model (retained test)": (run.metrics["unlearned.test_acc"], 1 / request.data.num_classes)})
    write_run(folder, command="forget",
              config={"options": options, "train": config.to_dict(), "method_kwargs": method_kwargs},
              metrics=run.metrics, report=forget_report(run, columns, request.data.class_names, notes),
              model=run.unlearned, json_out=json_out, health=health)
