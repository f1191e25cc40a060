"""The main forgetting job: original vs unlearned vs retrained, on one scenario.

Shared by the CLI, ``make demo`` and ``benchmarks/forget.py``.
"""

from __future__ import annotations

import copy
import hashlib
import inspect
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import TensorDataset

from neuroplastic import registry, select
from neuroplastic.batches import Rebatched, model_device, seeded_rng
from neuroplastic.data.scenarios import ForgetScenario
from neuroplastic.data.splits import DataSplit, loader
from neuroplastic.distributed import rank_batches
from neuroplastic.errors import NeuroplasticError
from neuroplastic.evaluate.forgetting import evaluate_forgetting, gaps
from neuroplastic.evaluate.mia import INFORMATIVE_AUC
from neuroplastic.evaluate.outputs import collect
from neuroplastic.forget.base import Unlearner
from neuroplastic.forget.baselines import Retrain
from neuroplastic.forget.ssd import SSD
from neuroplastic.importance.cache import ImportanceCache, data_fingerprint, default_cache_dir
from neuroplastic.intervene.dampen import dampen_
from neuroplastic.io import load_model_weights, read_metadata, save_model
from neuroplastic.loop import ProgressFn
from neuroplastic.models.factory import ModelFactory, seeded_model
from neuroplastic.runs import writes_files
from neuroplastic.training import TrainConfig, fit


def trained_model(data: DataSplit, factory: ModelFactory, config: TrainConfig, *,
                  device: str | torch.device = "cpu", cache_dir: Path | None = None,
                  progress: ProgressFn | None = None) -> tuple[nn.Module, float]:
    """A model trained on ``data.train`` with ``config``, cached on disk by
    (data, architecture, recipe). Returns the model and its training seconds."""
    model = seeded_model(factory, config.seed, device)
    ident = json.dumps([data_fingerprint(loader(data.train)), type(model).__qualname__,
                        str(model), config.to_dict()])
    key = hashlib.sha256(ident.encode()).hexdigest()[:32]
    path = (cache_dir or default_cache_dir() / "models") / f"{key}.safetensors"
    if path.is_file():
        load_model_weights(model, path)
        return model.eval(), float(read_metadata(path).get("train_seconds", "nan"))
    start = time.perf_counter()
    fit(model, data.train, config, progress=progress)
    seconds = time.perf_counter() - start
    if writes_files():  # under torchrun rank 0 fills the cache
        save_model(model, path, metadata={"train_seconds": repr(seconds)})
    return model.eval(), seconds


@dataclass
class ForgetRun:
    """Everything one forgetting job produced."""

    metrics: dict[str, Any]
    unlearned: nn.Module
    class_acc: dict[str, list[float]] = field(default_factory=dict)
    sweep: list[tuple[float, float, float]] = field(default_factory=list)
    trace: list[dict[str, float]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def flat(prefix: str, values: dict[str, Any]) -> dict[str, Any]:
    return {f"{prefix}.{k}": float(v) for k, v in values.items() if isinstance(v, (int, float))}


#: Where SSD-family methods take D, the full training data, from in the CLI and benchmark.
SSD_FULL = ("published", "train")


@dataclass
class ForgetOptions:
    """How a forgetting job is judged and where SSD takes D from.

    Attributes:
        ssd_full: ``"published"`` -- ssd and lfssd build D as the reference does (retain
            then forget, re-batched; see :class:`~neuroplastic.forget.ssd.SSD`);
            ``"train"`` -- D is the training split in its own order. ssd-auto always
            uses the training split (its cached importance is what makes it fast).
        nonmembers: non-member samples of the entropy and loss attacks
            (``"test-retain"`` or ``"validation"``).
        ulira_shadows: run U-LiRA with this many shadow models (even, >= 6), or not at all.
        ulira_variance: U-LiRA's variance: ``pooled``, ``global`` or ``per_example``
            (None: pooled below 64 shadows).
    """

    ssd_full: str = "published"
    nonmembers: str = "test-retain"
    ulira_shadows: int | None = None
    ulira_variance: str | None = None

    def __post_init__(self) -> None:
        if self.ssd_full not in SSD_FULL:
            raise NeuroplasticError(f"ssd_full must be one of {', '.join(SSD_FULL)}, got {self.ssd_full!r}")
        if self.ulira_shadows is not None and (self.ulira_shadows < 6 or self.ulira_shadows % 2):
            raise NeuroplasticError(f"--shadows must be an even number >= 6 (each shadow is attacked with "
                                    f"the others: two that saw each sample, two that did not), got "
                                    f"{self.ulira_shadows}")
        from neuroplastic.evaluate.ulira import VARIANCES

        if self.ulira_variance is not None and self.ulira_variance not in VARIANCES:
            raise NeuroplasticError(f"--ulira-variance must be one of {', '.join(VARIANCES)}, got "
                                    f"{self.ulira_variance!r}")

    def full_for(self, name: str, train: Any) -> Any:
        """The ``full`` data to give method ``name``: the training loader, or None when the
        method builds the published D itself (``builds_published_d``, ssd and lfssd) and
        ``ssd_full`` asks for it."""
        builds = registry.get(name, kind="forget").builds_published_d
        return None if builds and self.ssd_full == "published" else train


def run_forget(scenario: ForgetScenario, model: nn.Module, *, method: str,
               method_kwargs: dict[str, Any] | None = None, config: TrainConfig = TrainConfig(),
               factory: ModelFactory | None = None, retrain: bool = True,
               original_seconds: float = float("nan"), sweep: bool = True,
               compare: tuple[str, ...] = (), options: ForgetOptions | None = None,
               status: Callable[[str], Any] | None = None) -> ForgetRun:
    """Unlearn ``scenario`` from a copy of ``model`` with ``method``, evaluate the original,
    the unlearned and (optionally) a retrained model, and time each.

    The first request runs with an empty importance cache (an honest cold
    start); for an SSD method a second identical request on another copy measures the cost
    with the full-data importance cached (``cached_request_seconds``, repair excluded).
    Each ``compare`` method runs the same request from a cold cache too; its
    numbers are stored under ``<name>.*``. The entropy attack's power on the original
    model is ``original.mia_auc`` and ``mia_informative`` (1 if >= 0.6); with
    ``options.ulira_shadows``, U-LiRA figures ``<model>.ulira.*`` are added for the
    original (nothing unlearned: the attack's power), the unlearned model, the retrained
    one and every compared method.
    """
    options = options or ForgetOptions()
    say = status or (lambda _msg: None)
    unlearner = cold_method(method, scenario, method_kwargs or {})
    bs = config.batch_size
    forget = loader(scenario.forget, batch_size=bs)
    retain = loader(scenario.retain, batch_size=bs, shuffle=True, seed=config.seed)
    train_loader = loader(scenario.data.train, batch_size=bs)
    holdout = loader(scenario.data.val, batch_size=256)

    metrics: dict[str, Any] = {"method": method, "scenario": scenario.name,
                               "description": scenario.description,
                               "forgotten_rows": ",".join(map(str, sorted(scenario.forget_rows))),
                               "forgotten_count": float(len(scenario.forget_idx)),
                               "retain_classes": float(scenario.retain_classes),
                               "ssd_full": options.ssd_full, "mia_nonmembers": options.nonmembers}
    if scenario.skipped_rows:
        metrics["skipped_rows"] = ",".join(f"{row}:{where}" for row, where in
                                           sorted(scenario.skipped_rows.items()))

    def evaluate(net: nn.Module, *, power: bool = False) -> dict[str, Any]:
        return evaluate_forgetting(net, scenario, nonmembers=options.nonmembers, attack_power=power)

    say("evaluating the original model")
    original_eval = evaluate(model, power=True)
    metrics.update(flat("original", original_eval))
    metrics["original.seconds"] = original_seconds
    auc = metrics.get("original.mia_auc", float("nan"))
    metrics["mia_informative"] = float(auc == auc and auc >= INFORMATIVE_AUC)

    say(f"unlearning with {method}")
    show_phases(unlearner, say, f"unlearning with {method}")
    unlearned = copy.deepcopy(model)
    full = options.full_for(method, train_loader)
    with seeded_rng(config.seed, model_device(model)):
        result = unlearner.unlearn(unlearned, forget, retain, full=full, holdout=holdout)
    say("evaluating the unlearned model")
    unlearned_eval = evaluate(unlearned)
    metrics.update(flat("unlearned", unlearned_eval))
    metrics.update(flat("unlearned", {k: v for k, v in result.metrics.items()
                                      if k.endswith("_seconds") or k == "seconds"}))
    metrics.update(flat("choice", {k: v for k, v in result.metrics.items()
                                   if not k.endswith("_seconds") and k != "seconds"}))

    if isinstance(unlearner, SSD):  # the importance cache is SSD's; other methods have none
        metrics["cached_request_seconds"] = cached_request_seconds(unlearner, model, forget, retain,
                                                                   full, holdout, say)
    run = ForgetRun(metrics=metrics, unlearned=unlearned, trace=result.trace)
    run.class_acc = {"original": original_eval["class_acc"],
                     "unlearned": unlearned_eval["class_acc"]}
    retrained = None
    if retrain:
        say("retraining from scratch on the retain set (the reference)")
        retrained = copy.deepcopy(model)
        retrainer = Retrain(epochs=config.epochs, lr=config.lr, weight_decay=config.weight_decay,
                            seed=config.seed, factory=factory)
        retrainer.progress = lambda done, total: say(
            f"retraining from scratch on the retain set: step {done}/{total or '?'}")
        with seeded_rng(config.seed, model_device(model)):
            retrain_result = retrainer.unlearn(retrained, forget, retain)
        say("evaluating the retrained model")
        retrain_eval = evaluate(retrained)
        metrics.update(flat("retrain", retrain_eval))
        metrics["retrain.seconds"] = retrain_result.metrics["seconds"]
        metrics.update(flat("gap", gaps(unlearned_eval, retrain_eval)))
        metrics["speedup_vs_retrain"] = metrics["retrain.seconds"] / metrics["unlearned.seconds"]
        run.class_acc["retrain"] = retrain_eval["class_acc"]
    compared: dict[str, nn.Module] = {}
    for other in compare:
        say(f"comparing with {other}")
        other_metrics, copied, class_acc = compare_method(
            other, model, scenario, full=options.full_for(other, train_loader), config=config,
            options=options, say=say)
        metrics.update(other_metrics)
        run.class_acc[other] = class_acc
        compared[other] = copied
    if sweep and isinstance(unlearner, SSD):
        say("sweeping alpha for the trade-off plot")
        run.sweep = alpha_sweep(model, scenario, unlearner, forget,
                                full if full is not None else Rebatched(retain, forget, batch_size=bs))
    if options.ulira_shadows:
        methods = {"original": None, "unlearned": method,
                   **({"retrain": "retrain"} if retrained is not None else {}),
                   **{name: name for name in compared}}
        metrics.update(ulira_metrics(scenario, methods, device=model_device(model), config=config,
                                     factory=factory,
                                     method_kwargs={method: method_kwargs or {}}, options=options,
                                     say=say))
    run.warnings = run_warnings(metrics, scenario)
    if run.warnings:
        metrics["warnings"] = " | ".join(run.warnings)
    return run


def run_warnings(metrics: dict[str, Any], request: ForgetScenario) -> list[str]:
    """Sentences the console and the report must say (and metrics.json keeps, as
    ``warnings``): rows never trained on, a one-class retain set, nothing changed, a backdoor
    that still works, an attack that cannot tell members from non-members, a missed target."""
    notes = []
    if request.skipped_rows:
        listed = ", ".join(f"{row} ({where})" for row, where in sorted(request.skipped_rows.items())[:10])
        more = len(request.skipped_rows) - 10
        notes.append(f"{len(request.skipped_rows)} requested row(s) were never trained on and were left "
                     f"out: {listed}{f' and {more} more' if more > 0 else ''}")
    if request.retain_classes < 2:
        notes.append("the retain set holds a single class: any model that always predicts it "
                     "scores full retained accuracy, so retained accuracy says nothing here")
    before, after = metrics.get("original.forget_acc"), metrics.get("unlearned.forget_acc")
    if isinstance(before, float) and isinstance(after, float) and after == before:
        notes.append(f"forget-set accuracy did not change ({before:.3f} -> {after:.3f})")
    asr_before = metrics.get("original.attack_success")
    asr_after = metrics.get("unlearned.attack_success")
    if isinstance(asr_before, float) and isinstance(asr_after, float) and asr_after >= asr_before:
        notes.append(f"the backdoor still works: attack success {asr_before:.2f} -> {asr_after:.2f}")
    if metrics.get("mia_informative") == 0.0:
        notes.append(f"the entropy attack cannot tell members from non-members on the original model "
                     f"(AUC {metrics.get('original.mia_auc', float('nan')):.2f} < 0.6): its MIA figures "
                     "say nothing here, and a lower one is not better")
    power = metrics.get("original.ulira.auc")
    if isinstance(power, float) and power < 0.6:
        notes.append(f"U-LiRA cannot tell the forget set from unseen samples even on the original "
                     f"model (AUC {power:.2f}): its figures say nothing here")
    target = metrics.get("choice.target_forget_acc")
    if isinstance(target, float) and isinstance(after, float) and after > target + 0.05:
        notes.append(f"the method missed its target: forget accuracy {after:.3f}, target {target:.3f}")
    return notes


def compare_method(name: str, model: nn.Module, scenario: ForgetScenario, *, full: Any,
                   config: TrainConfig, options: ForgetOptions, label: str | None = None,
                   say: Callable[[str], Any] | None = None
                   ) -> tuple[dict[str, Any], nn.Module, list[float]]:
    """Run registered method ``name`` on a copy of ``model`` from a cold cache, as a
    compared method: its flat metrics under ``<label or name>.*`` (and, for SSD methods,
    the cost of the same request with the importance cached), the unlearned copy and its
    per-class test accuracy."""
    say = say or (lambda _msg: None)
    label = label or name
    bs = config.batch_size
    forget = loader(scenario.forget, batch_size=bs)
    retain = loader(scenario.retain, batch_size=bs, shuffle=True, seed=config.seed)
    holdout = loader(scenario.data.val, batch_size=256)
    copied = copy.deepcopy(model)
    method = cold_method(name, scenario, {})
    show_phases(method, say, f"comparing with {name}")
    with seeded_rng(config.seed, model_device(model)):
        result = method.unlearn(copied, forget, retain, full=full, holdout=holdout)
    say(f"evaluating {name}'s model")
    evaluated = evaluate_forgetting(copied, scenario, nonmembers=options.nonmembers)
    metrics = flat(label, {**evaluated, "seconds": result.metrics["seconds"]})
    if isinstance(method, SSD):
        metrics[f"{label}.cached_request_seconds"] = cached_request_seconds(
            method, model, forget, retain, full, holdout, say)
    return metrics, copied, evaluated["class_acc"]  # type: ignore[return-value]


def ulira_metrics(scenario: ForgetScenario, methods: dict[str, str | None], *,
                  device: torch.device, config: TrainConfig, factory: ModelFactory | None,
                  options: ForgetOptions,
                  method_kwargs: dict[str, dict[str, Any]], say: Callable[[str], Any]) -> dict[str, Any]:
    """U-LiRA figures ``<model>.ulira.*`` for each named method -- None is "nothing
    unlearned" (``original``: the attack's own power). Shadows are trained once with the
    run's recipe on halves of the training split plus the test split; each method is
    applied to every shadow (``<model>.ulira.seconds``), and every shadow in turn is the
    model under attack (Hayes et al.: targets trained exactly as the shadows), so the
    figures are mean +- std over the shadows (``*_std``).

    Candidates: the forget set plus as many held-out samples like the forgotten ones (the
    forgotten class's test images for class requests, random test samples otherwise, all
    of them if fewer); every shadow trains on half of them and unlearns those, so every
    model's request has the same size."""
    from neuroplastic.evaluate.ulira import train_shadows, ulira

    if factory is None:
        raise NeuroplasticError("U-LiRA needs the model factory to train shadow models")
    data = scenario.data
    pool = TensorDataset(torch.cat([data.train.tensors[0], data.test.tensors[0]]),
                         torch.cat([data.train.tensors[1], data.test.tensors[1]]))
    like = scenario.test_forget_idx if scenario.test_forget_idx is not None and \
        len(scenario.test_forget_idx) >= 10 else torch.arange(len(data.test))
    generator = torch.Generator().manual_seed(config.seed)
    negatives = like[torch.randperm(len(like), generator=generator)[:len(scenario.forget_idx)]]
    candidates = torch.cat([scenario.forget_idx, len(data.train) + negatives])
    shadows_n = int(options.ulira_shadows or 0)

    def build(index: int) -> nn.Module:
        return seeded_model(factory, config.seed + 1 + index, device)

    def train(net: nn.Module, dataset: TensorDataset) -> None:
        fit(net, dataset, config)

    say(f"U-LiRA: training {shadows_n} shadow models")
    shadows = train_shadows(pool, build, train, shadows=shadows_n, seed=config.seed,
                            candidates=candidates,
                            progress=lambda done, total: say(f"U-LiRA: shadow {done}/{total} trained"))
    out: dict[str, Any] = {"ulira.shadows": float(shadows_n), "ulira.shadow_train_seconds": shadows.seconds,
                           "ulira.request_size": float(len(candidates) // 2)}
    for name, method in methods.items():
        say(f"U-LiRA: {method or 'no'} unlearning on {shadows_n} shadows")
        unlearn = shadow_unlearner(method, scenario, config=config, factory=factory, options=options,
                                   kwargs=method_kwargs.get(method or "", {}))
        result = ulira(shadows, pool=pool, candidates=candidates, unlearn=unlearn,
                       variance=options.ulira_variance)
        out.update({f"{name}.{key}": value for key, value in result.metrics().items()})
    return out


def shadow_unlearner(method: str | None, scenario: ForgetScenario, *, config: TrainConfig,
                     factory: ModelFactory | None, options: ForgetOptions,
                     kwargs: dict[str, Any]) -> Callable[..., None]:
    """``unlearn(model, forget, retain, trained)`` applying ``method`` to a shadow as the job
    applied it to the model under test (None: unlearn nothing)."""
    holdout = loader(scenario.data.val, batch_size=256)

    def unlearn(model: nn.Module, forget: TensorDataset, retain: TensorDataset,
                trained: TensorDataset) -> None:
        if method is None:
            return
        with seeded_rng(config.seed, model_device(model)):
            apply(model, forget, retain, trained)

    def apply(model: nn.Module, forget: TensorDataset, retain: TensorDataset,
              trained: TensorDataset) -> None:
        forget_data = loader(forget, batch_size=config.batch_size)
        retain_data = loader(retain, batch_size=config.batch_size, shuffle=True, seed=config.seed)
        if registry.get(method, kind="forget") is Retrain:  # trained as the job's recipe says
            Retrain(epochs=config.epochs, lr=config.lr, weight_decay=config.weight_decay,
                    seed=config.seed, factory=factory).unlearn(model, forget_data, retain_data)
            return
        full = options.full_for(method, loader(trained, batch_size=config.batch_size))
        cold_method(method, scenario, kwargs).unlearn(model, forget_data, retain_data, full=full,
                                                       holdout=holdout)

    return unlearn


def show_phases(unlearner: Unlearner, say: Callable[[str], Any], label: str) -> None:
    """Have ``unlearner`` tell ``say`` each phase it starts and, in a phase that trains, its
    steps: ``<label>: search``, ``<label>: repair step 12/86``."""
    current = [""]

    def announce(phase: str) -> None:
        current[0] = phase.replace("_", " ")
        say(f"{label}: {current[0]}")

    unlearner.announce = announce
    unlearner.progress = lambda done, total: say(f"{label}: {current[0]} step {done}/{total or '?'}")


def cached_request_seconds(unlearner: Unlearner, model: nn.Module, forget: Any, retain: Any,
                           full: Any, holdout: Any, say: Callable[[str], Any]) -> float:
    """Seconds of the same request again on a fresh copy (full-data importance now cached),
    without any repair step (reported separately)."""
    label = f"repeating the {unlearner.name} request with the full-data importance cached"
    say(label)
    show_phases(unlearner, say, label)
    with seeded_rng(0, model_device(model)):
        again = unlearner.unlearn(copy.deepcopy(model), forget, retain, full=full, holdout=holdout)
    return again.metrics["seconds"] - again.metrics.get("repair_seconds", 0.0)


def cold_method(name: str, scenario: ForgetScenario, kwargs: dict[str, Any]) -> Unlearner:
    """The registered method, with a fresh in-memory importance cache for SSD methods, told
    the target forget accuracy where the request itself implies it (corrective: the
    identified labels are known wrong) and the method takes one."""
    kwargs = dict(kwargs)
    accepts = inspect.signature(registry.get(name, kind="forget")).parameters
    if scenario.target_forget_acc is not None and "target_forget_acc" in accepts:
        kwargs.setdefault("target_forget_acc", scenario.target_forget_acc)
    unlearner: Unlearner = registry.create(name, kind="forget", **kwargs)
    if isinstance(unlearner, SSD):
        unlearner.cache = ImportanceCache()
    return unlearner


def alpha_sweep(model: nn.Module, scenario: ForgetScenario, method: SSD, forget: Any, full: Any, *,
                alphas: tuple[float, ...] = (1, 2, 5, 10, 20, 50, 100)) -> list[tuple[float, float, float]]:
    """(alpha, forget accuracy, retained test accuracy) of pure dampening at each alpha, for
    the report's trade-off plot (evaluation only: nothing is chosen from it)."""
    i_d = (method.cache or ImportanceCache()).get_or_compute(method.estimator, model, full)
    i_f = method.estimator.estimate(model, rank_batches(forget))
    test = loader(scenario.test_retain, batch_size=256)
    forget_eval = loader(scenario.forget, batch_size=256)
    points = []
    for alpha in alphas:
        candidate = copy.deepcopy(model)
        dampen_(candidate, i_f, i_d, mask=select.ratio(i_f, i_d, alpha=alpha), lam=method.lam)
        points.append((float(alpha), collect(candidate, forget_eval).accuracy,
                       collect(candidate, test).accuracy))
    return points
