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

from neuroplastic import registry, select
from neuroplastic.data.scenarios import ForgetScenario
from neuroplastic.data.splits import DataSplit, loader
from neuroplastic.evaluate.forgetting import evaluate_forgetting, gaps
from neuroplastic.evaluate.outputs import collect
from neuroplastic.forget.base import Unlearner
from neuroplastic.forget.baselines import Retrain
from neuroplastic.forget.ssd import SSD
from neuroplastic.importance.cache import ImportanceCache, data_fingerprint, default_cache_dir
from neuroplastic.intervene.dampen import dampen_
from neuroplastic.io import load_model_weights, read_metadata, save_model
from neuroplastic.models.factory import ModelFactory, seeded_model
from neuroplastic.training import TrainConfig, fit


def trained_model(data: DataSplit, factory: ModelFactory, config: TrainConfig, *,
                  device: str | torch.device = "cpu", cache_dir: Path | None = None,
                  description: str | None = None) -> tuple[nn.Module, float]:
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
    fit(model, data.train, config, description=description)
    seconds = time.perf_counter() - start
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


def flat(prefix: str, values: dict[str, Any]) -> dict[str, Any]:
    return {f"{prefix}.{k}": float(v) for k, v in values.items() if isinstance(v, (int, float))}


def run_forget(scenario: ForgetScenario, model: nn.Module, *, method: str,
               method_kwargs: dict[str, Any] | None = None, config: TrainConfig = TrainConfig(),
               factory: ModelFactory | None = None, retrain: bool = True,
               original_seconds: float = float("nan"), sweep: bool = True,
               compare: tuple[str, ...] = (),
               status: Callable[[str], Any] | None = None) -> ForgetRun:
    """Unlearn ``scenario`` from a copy of ``model`` with ``method``, evaluate the original,
    the unlearned and (optionally) a retrained model, and time each.

    The first request runs with an empty importance cache (an honest cold
    start); a second identical request on another copy measures the cost with
    the full-data importance cached (``cached_request_seconds``, repair excluded).
    Each ``compare`` method runs the same request from a cold cache too; its
    numbers are stored under ``<name>.*``.
    """
    say = status or (lambda _msg: None)
    unlearner = cold_method(method, scenario, method_kwargs or {})
    bs = config.batch_size
    forget = loader(scenario.forget, batch_size=bs)
    retain = loader(scenario.retain, batch_size=bs, shuffle=True, seed=config.seed)
    full = loader(scenario.data.train, batch_size=bs)
    holdout = loader(scenario.data.val, batch_size=256)

    metrics: dict[str, Any] = {"method": method, "scenario": scenario.name,
                               "description": scenario.description,
                               "forgotten_rows": ",".join(map(str, sorted(scenario.forget_rows))),
                               "forgotten_count": float(len(scenario.forget_idx))}
    if scenario.skipped_rows:
        metrics["skipped_rows"] = ",".join(f"{row}:{where}" for row, where in
                                           sorted(scenario.skipped_rows.items()))
    say("evaluating the original model")
    original_eval = evaluate_forgetting(model, scenario)
    metrics.update(flat("original", original_eval))
    metrics["original.seconds"] = original_seconds

    say(f"unlearning with {method}")
    unlearned = copy.deepcopy(model)
    result = unlearner.unlearn(unlearned, forget, retain, full=full, holdout=holdout)
    unlearned_eval = evaluate_forgetting(unlearned, scenario)
    metrics.update(flat("unlearned", unlearned_eval))
    metrics.update(flat("unlearned", {k: v for k, v in result.metrics.items()
                                      if k.endswith("_seconds") or k == "seconds"}))
    metrics.update(flat("choice", {k: v for k, v in result.metrics.items()
                                   if not k.endswith("_seconds") and k != "seconds"}))

    metrics["cached_request_seconds"] = cached_request_seconds(unlearner, model, forget, retain,
                                                               full, holdout, say)
    run = ForgetRun(metrics=metrics, unlearned=unlearned, trace=result.trace)
    run.class_acc = {"original": original_eval["class_acc"],
                     "unlearned": unlearned_eval["class_acc"]}
    if retrain:
        say("retraining from scratch on the retain set (the reference)")
        retrained = copy.deepcopy(model)
        retrainer = Retrain(epochs=config.epochs, lr=config.lr, weight_decay=config.weight_decay,
                            seed=config.seed, factory=factory)
        retrain_result = retrainer.unlearn(retrained, forget, retain)
        retrain_eval = evaluate_forgetting(retrained, scenario)
        metrics.update(flat("retrain", retrain_eval))
        metrics["retrain.seconds"] = retrain_result.metrics["seconds"]
        metrics.update(flat("gap", gaps(unlearned_eval, retrain_eval)))
        metrics["speedup_vs_retrain"] = metrics["retrain.seconds"] / metrics["unlearned.seconds"]
        run.class_acc["retrain"] = retrain_eval["class_acc"]
    for other in compare:
        say(f"comparing with {other}")
        copied = copy.deepcopy(model)
        other_method = cold_method(other, scenario, {})
        other_result = other_method.unlearn(copied, forget, retain, full=full, holdout=holdout)
        other_eval = evaluate_forgetting(copied, scenario)
        metrics.update(flat(other, {**other_eval, "seconds": other_result.metrics["seconds"]}))
        if isinstance(other_method, SSD):
            metrics[f"{other}.cached_request_seconds"] = cached_request_seconds(
                other_method, model, forget, retain, full, holdout, say)
        run.class_acc[other] = other_eval["class_acc"]
    if sweep and isinstance(unlearner, SSD):
        say("sweeping alpha for the trade-off plot")
        run.sweep = alpha_sweep(model, scenario, unlearner, forget, full)
    return run


def cached_request_seconds(unlearner: Unlearner, model: nn.Module, forget: Any, retain: Any,
                           full: Any, holdout: Any, say: Callable[[str], Any]) -> float:
    """Seconds of the same request again on a fresh copy (full-data importance now cached),
    without any repair step (reported separately)."""
    say(f"repeating the {unlearner.name} request with the full-data importance cached")
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
    i_f = method.estimator.estimate(model, forget)
    test = loader(scenario.test_retain, batch_size=256)
    forget_eval = loader(scenario.forget, batch_size=256)
    points = []
    for alpha in alphas:
        candidate = copy.deepcopy(model)
        dampen_(candidate, i_f, i_d, mask=select.ratio(i_f, i_d, alpha=alpha), lam=method.lam)
        points.append((float(alpha), collect(candidate, forget_eval).accuracy,
                       collect(candidate, test).accuracy))
    return points
