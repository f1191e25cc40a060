"""``neuroplastic forget skill`` (skill unlearning in a causal LM) and ``neuroplastic skills make-demo``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from neuroplastic.cli.common import (
    Device,
    JsonOut,
    RunFolder,
    check_device,
    options_of,
    require_fraction,
    write_run,
)
from neuroplastic.cli.forget import forget_app
from neuroplastic.cli.names import DEMO_SKILLS
from neuroplastic.cli.output import console, warn
from neuroplastic.cli.progress import progress_bar
from neuroplastic.errors import NeuroplasticError
from neuroplastic.runs import run_dir  # light: no torch

if TYPE_CHECKING:
    from rich.table import Table

    from neuroplastic.evaluate.report import Report
    from neuroplastic.skills.experiment import SkillRequest, SkillRun

DEMO_STEPS = 10000  # DemoRecipe.steps (a test checks they agree)

skills_app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)


def method_options(method: str, *, percent: float | None, h: float | None,
                   false_abstain: float | None, seed: int) -> dict[str, Any]:
    """Keyword hyperparameters of ``method`` from the command's options (unset ones keep defaults)."""
    from neuroplastic import registry
    from neuroplastic.params import keyword_parameters
    from neuroplastic.skills.neuron_adjust import check_percent

    takes = set(keyword_parameters(registry.get(method, kind="skill")))

    def applies(key: str, option: str) -> None:
        """Refuse ``option`` for a method without hyperparameter ``key``, naming those with it."""
        if key not in takes:
            owners = [e.name for e in registry.available("skill") if key in keyword_parameters(e.cls)]
            raise NeuroplasticError(f"{option} applies to {' and '.join(owners)}, not {method}")

    given: dict[str, Any] = {}
    if percent is not None:
        check_percent(percent)
        applies("percent", "--percent")
        given["percent"] = percent
    if h is not None:
        applies("h", "--h")
        if not h > 0:
            raise NeuroplasticError(f"--h must be > 0, got {h}")
        given["h"] = h
    if false_abstain is not None:
        applies("false_abstain", "--false-abstain")
        require_fraction("--false-abstain", false_abstain)
        given["false_abstain"] = false_abstain
    if "seed" in takes:
        given["seed"] = seed
    return given


def file_request(forget: Path, retain: Path | None, evaluation: list[Path]) -> SkillRequest:
    """A request from JSONL files; skills are named by file stem. Without ``--eval`` files, the
    forget and retain files themselves are evaluated."""
    from neuroplastic.skills.experiment import SkillRequest
    from neuroplastic.skills.prompts import load_jsonl

    forget_examples = load_jsonl(forget)
    retain_examples = load_jsonl(retain) if retain is not None else []
    sets = {path.stem: load_jsonl(path) for path in evaluation}
    if not sets:
        sets[forget.stem] = forget_examples
        if retain is not None:
            sets[retain.stem] = retain_examples
    if forget.stem not in sets:
        raise NeuroplasticError(f"no --eval file is named like the forget file ({forget.stem}.jsonl)")
    if len(sets) < 2:
        raise NeuroplasticError("evaluate at least one retained skill: pass --retain or more --eval files")
    return SkillRequest(forget_skill=forget.stem, forget=forget_examples, retain=retain_examples,
                        evaluation=sets)


def skill_table(run: SkillRun) -> Table:
    """Per-skill accuracy before/after and abstain rate."""
    from rich.table import Table

    metrics = run.metrics
    table = Table("skill", "acc before", "acc after", "abstain",
                  title=f"{metrics['method']}: forget {metrics['forget_skill']}")
    for skill in run.after.scores:
        marker = " (forget)" if skill == metrics["forget_skill"] else ""
        table.add_row(skill + marker, *(f"{metrics[f'skills.{skill}.{k}']:.3f}"
                                        for k in ("acc_before", "acc_after", "abstain_rate")))
    return table


def skill_report(run: SkillRun) -> Report:
    """report.html: per-skill accuracy, selected neurons per layer, key-score histograms with
    the detector's decision threshold."""
    from neuroplastic.evaluate.report import Report, grouped_bars, histograms

    metrics = run.metrics
    report = Report(f"neuroplastic forget skill: {metrics['forget_skill']} ({metrics['method']})")
    skills = list(run.after.scores)
    report.table("Summary", ["metric", "value"],
                 [[k, metrics[k]] for k in ("forget_ratio", "retain_ratio", "overhead",
                                             "retain_perplexity_before", "retain_perplexity_after")])
    report.figure("Exact match per skill", grouped_bars(
        {"before": [run.before.scores[s].acc for s in skills],
         "after": [run.after.scores[s].acc for s in skills],
         "abstained": [run.after.scores[s].abstain_rate for s in skills]}, skills, ylabel="rate"))
    if "neurons_per_layer" in run.details:
        layers = [str(i) for i in range(len(run.details["neurons_per_layer"]))]
        report.figure("Neurons adjusted per layer", grouped_bars(
            {"neurons": [float(n) for n in run.details["neurons_per_layer"]]}, layers, ylabel="neurons"))
    if "key_scores" in run.details:
        report.figure("Key scores of each skill's evaluation prompts", histograms(
            run.details["key_scores"],
            xlabel="key score (hypercube: distance in forget stds; calibrated: probe logit)",
            threshold=run.details.get("key_threshold"),
            threshold_label=run.details.get("key_threshold_label", "threshold")))
    chosen = [[k.removeprefix("method."), v] for k, v in metrics.items() if k.startswith("method.")]
    report.table("Choices the method made", ["setting", "value"], chosen)
    report.text("Exact match with greedy decoding; an abstention counts as a wrong answer. "
                "forget_ratio = after/before on the forgotten skill; retain_ratio = mean after/before "
                "over the other skills.")
    return report


@forget_app.command("skill")
def forget_skill(
    ctx: typer.Context,
    model: Path | None = typer.Option(None, help="Local Hugging Face causal LM directory "
                                      "(default: the shipped demo model)."),
    forget: Path | None = typer.Option(None, help="JSONL of the skill to forget (prompt, answer)."),
    retain: Path | None = typer.Option(None, help="JSONL of skills to keep."),
    evaluation: list[Path] = typer.Option([], "--eval", help="JSONL evaluation sets, one per skill."),
    demo_skill: str = typer.Option("addition", help=f"Demo model only: {', '.join(DEMO_SKILLS)}."),
    method: str = typer.Option("ksd-calibrated", help="na, ksd, ksd-calibrated, na-ksd, ga or ssd."),
    percent: float | None = typer.Option(None, help="NA: percent of MLP neurons to adjust."),
    h: float | None = typer.Option(None, help="KSD: hypercube widening factor."),
    false_abstain: float | None = typer.Option(None, help="Calibrated KSD: target abstain rate "
                                               "on retained skills."),
    seed: int = typer.Option(0, help="Seed of NA's draws and of the detector's split."),
    param: list[str] = typer.Option([], help="A hyperparameter of --method, name=value; repeatable "
                                    "(--percent, --h and --false-abstain are aliases)."),
    device: Device = "cpu",
    out: RunFolder = None,
    json_out: JsonOut = False,
) -> None:
    """Make a language model lose one skill and keep the others; with no options, on the demo model."""
    options = options_of(ctx.params)
    if model is None:
        if forget is not None or retain is not None or evaluation:
            raise NeuroplasticError("--forget/--retain/--eval need --model (the demo uses its own skills)")
        if demo_skill not in DEMO_SKILLS:
            raise NeuroplasticError(f"unknown demo skill {demo_skill!r}; choose from "
                                    f"{', '.join(DEMO_SKILLS)}")
    else:
        if not model.is_dir():
            raise NeuroplasticError(f"model folder not found: {model}")
        if forget is None:
            raise NeuroplasticError("--model needs --forget (a JSONL file of the skill to forget)")
        for path in [forget, *([retain] if retain else []), *evaluation]:
            if not path.is_file():
                raise NeuroplasticError(f"prompt file not found: {path}")
    folder = run_dir("forget-skill", out)
    check_device(device)
    kwargs = method_options(method, percent=percent, h=h, false_abstain=false_abstain, seed=seed)
    from neuroplastic import registry

    typed = registry.parse_params(method, kind="skill", items=param, exclude=("seed",))
    for key in set(typed) & set(kwargs):
        raise NeuroplasticError(f"{key} is given twice: as --{key.replace('_', '-')} and as --param {key}")
    kwargs.update(typed)
    registry.create(method, kind="skill", **kwargs)  # ranges checked before the model loads
    from neuroplastic.skills.lm import require_transformers

    require_transformers()
    from transformers.utils import logging as hf_logging

    from neuroplastic.skills.demo import load_demo
    from neuroplastic.skills.experiment import demo_request, run_skill_forget
    from neuroplastic.skills.lm import load_causal_lm

    hf_logging.disable_progress_bar()  # our own status line reports progress
    request = demo_request(demo_skill) if model is None else file_request(forget, retain, evaluation)
    net, tokenizer = load_demo(device=device) if model is None else load_causal_lm(model, device=device)
    from neuroplastic.cli.threads import fit_threads

    fit_threads(net)
    method_object = registry.create(method, kind="skill", **kwargs)
    with console.status(f"{method}: measuring, applying and evaluating"):
        run = run_skill_forget(net, tokenizer, request, method_object, keep=method_object.edits_weights,
                               key_scores=True)
    console.print(skill_table(run))
    console.print(f"forget ratio {run.metrics['forget_ratio']:.3f}, retain ratio "
                  f"{run.metrics['retain_ratio']:.3f}, generation overhead {run.metrics['overhead']:.2f}x")
    notes = skill_warnings(run.metrics)
    for note in notes:
        warn(note)
    report = skill_report(run)
    for note in notes:
        report.banner(note)
    write_run(folder, command="forget skill", config={"options": options, "method_kwargs": kwargs},
              metrics=run.metrics, report=report,
              model=net if method_object.edits_weights else None, json_out=json_out)


def skill_warnings(metrics: dict[str, Any]) -> list[str]:
    """Sentences for a skill that was not forgotten or other skills that were lost."""
    notes = []
    forget_ratio, retain_ratio = metrics.get("forget_ratio"), metrics.get("retain_ratio")
    if isinstance(forget_ratio, float) and forget_ratio >= 0.99:
        notes.append(f"nothing was forgotten: the skill keeps {forget_ratio:.0%} of its accuracy")
    elif isinstance(forget_ratio, float) and forget_ratio > 0.15:
        notes.append(f"the skill is only partly forgotten: it keeps {forget_ratio:.0%} of its accuracy")
    if isinstance(retain_ratio, float) and retain_ratio < 0.9:
        notes.append(f"other skills suffered: they keep {retain_ratio:.0%} of their accuracy")
    return notes


@skills_app.command("make-demo")
def make_demo_command(
    out: Path | None = typer.Option(None, help="A new or empty folder for the model (default: "
                                    "runs/demo-model-<time>)."),
    replace_shipped: bool = typer.Option(False, help="Write into the installed package's demo "
                                         "model folder, replacing the shipped model."),
    steps: int = typer.Option(DEMO_STEPS, help="Training steps."),
    device: Device = "cpu",
) -> None:
    """Retrain the demo model (tiny Llama-style decoder on four synthetic skills) into a new
    folder; the shipped one is replaced only with --replace-shipped."""
    if steps < 1:
        raise NeuroplasticError(f"--steps must be >= 1, got {steps}")
    if out is not None and replace_shipped:
        raise NeuroplasticError("give either --out or --replace-shipped, not both")
    target = None if replace_shipped else run_dir("demo-model", out)
    check_device(device)
    from rich.table import Table

    from neuroplastic.skills.demo import DEMO_DIR, DemoRecipe, make_demo

    target = target or DEMO_DIR
    with progress_bar("training the demo model") as progress:
        accuracy = make_demo(target, recipe=DemoRecipe(steps=steps), device=device,
                             replace=replace_shipped, progress=progress)
    table = Table("skill", "exact match", title=f"demo model written to {target}")
    for skill, acc in accuracy.items():
        table.add_row(skill, f"{acc:.3f}")
    console.print(table)
