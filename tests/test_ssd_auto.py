"""ssd-auto: alpha chosen per request, repair when dampening alone damages."""

from __future__ import annotations

import copy

import pytest
import torch

from neuroplastic import NeuroplasticError
from neuroplastic.data import loader, random_samples
from neuroplastic.evaluate import accuracy
from neuroplastic.forget import SSD, Retrain, SSDAuto
from neuroplastic.importance import ImportanceCache


def test_ssd_auto_forgets_a_class_like_retraining(trained_mlp, class3):
    model = copy.deepcopy(trained_mlp)
    result = SSDAuto(cache=ImportanceCache()).unlearn(model, class3["forget"], class3["retain"],
                                                      full=class3["full"])
    retrained = copy.deepcopy(trained_mlp)
    Retrain(epochs=20).unlearn(retrained, class3["forget"], class3["retain"])
    assert result.metrics["target_source"] == "unseen-class"
    assert accuracy(model, class3["forget"]) <= accuracy(retrained, class3["forget"]) + 0.02
    assert (accuracy(model, class3["test_retain"])
            >= accuracy(retrained, class3["test_retain"]) - 0.03)


def test_chosen_alpha_is_the_largest_that_meets_the_target(trained_mlp, class3):
    model = copy.deepcopy(trained_mlp)
    cache = ImportanceCache()
    auto = SSDAuto(cache=cache, repair_epochs=0, steps=10, alpha_range=(1.0, 1000.0))
    result = auto.unlearn(model, class3["forget"], class3["retain"], full=class3["full"])
    alpha, lam = result.metrics["alpha"], result.metrics["lam"]
    goal = result.metrics["target_forget_acc"] + auto.forget_tol
    assert 1.0 < alpha < 1000.0  # an interior choice, so both checks below bite
    # independent check with plain SSD: the chosen alpha meets the goal, a slightly larger one
    # does not (bisection resolution after 10 steps on [1, 1000] is a factor 1.007)
    at = copy.deepcopy(trained_mlp)
    SSD(alpha=alpha, lam=lam, cache=cache).unlearn(at, class3["forget"], class3["retain"],
                                                   full=class3["full"])
    above = copy.deepcopy(trained_mlp)
    SSD(alpha=alpha * 1.01, lam=lam, cache=cache).unlearn(above, class3["forget"], class3["retain"],
                                                          full=class3["full"])
    assert accuracy(at, class3["forget"]) <= goal < accuracy(above, class3["forget"])
    assert all(torch.equal(a, b) for a, b in zip(at.state_dict().values(),
                                                 model.state_dict().values(), strict=True))
    # every candidate evaluated once; the reported accuracy, kept from the search, is the model's
    candidates = [(record["alpha"], record["lam"]) for record in result.trace]
    assert len(candidates) == len(set(candidates)) == result.metrics["candidates"]
    assert result.metrics["search_forget_acc"] == accuracy(model, class3["forget"])


def test_repair_restores_retained_accuracy(trained_mlp, class3):
    # force heavy damage: only tiny alphas are allowed
    damaged, repaired = copy.deepcopy(trained_mlp), copy.deepcopy(trained_mlp)
    kwargs = dict(alpha_range=(0.05, 0.1), cache=ImportanceCache())
    no_repair = SSDAuto(repair_epochs=0, **kwargs).unlearn(
        damaged, class3["forget"], class3["retain"], full=class3["full"])
    with_repair = SSDAuto(repair_epochs=1, **kwargs).unlearn(
        repaired, class3["forget"], class3["retain"], full=class3["full"])
    assert no_repair.metrics["repaired"] == 0.0 and with_repair.metrics["repaired"] == 1.0
    assert with_repair.metrics["repair_seconds"] > 0
    test = class3["test_retain"]
    assert accuracy(damaged, test) < accuracy(trained_mlp, test) - 0.1  # the damage is real
    assert accuracy(repaired, test) > accuracy(damaged, test) + 0.1
    assert accuracy(repaired, class3["forget"]) <= 0.02  # repair on retain data revives nothing


def test_sample_forgetting_needs_a_holdout_or_target(trained_mlp, digits_data):
    scenario = random_samples(digits_data, fraction=0.1)
    forget = loader(scenario.forget, batch_size=64)
    retain = loader(scenario.retain, batch_size=64)
    model = copy.deepcopy(trained_mlp)
    with pytest.raises(NeuroplasticError, match="holdout"):
        SSDAuto(cache=ImportanceCache()).unlearn(model, forget, retain)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(),
                                                 trained_mlp.state_dict().values(), strict=True))
    holdout = loader(digits_data.val, batch_size=64)
    result = SSDAuto(cache=ImportanceCache()).unlearn(model, forget, retain, holdout=holdout)
    assert result.metrics["target_source"] == "holdout"
    assert result.metrics["target_forget_acc"] == pytest.approx(accuracy(trained_mlp, holdout))


def test_bad_settings_are_refused():
    with pytest.raises(NeuroplasticError):
        SSDAuto(alpha_range=(5.0, 1.0))
    with pytest.raises(NeuroplasticError):
        SSDAuto(target_forget_acc=1.5)


def test_repair_never_revives_what_was_forgotten(trained_mlp, class3, digits_data):
    """Retain data that still holds the forgotten behaviour (like unidentified poisoned
    samples): an unguarded finetune would relearn it; the guarded repair keeps the goal."""
    scenario = class3["scenario"]
    leaky = torch.utils.data.ConcatDataset([scenario.retain] + [scenario.forget] * 5)
    leaky_retain = loader(leaky, batch_size=64, shuffle=True)
    model = copy.deepcopy(trained_mlp)
    auto = SSDAuto(alpha_range=(0.05, 0.1), target_forget_acc=0.0, cache=ImportanceCache())
    result = auto.unlearn(model, class3["forget"], leaky_retain, full=class3["full"])
    assert result.metrics["repaired"] == 1.0 and result.metrics["repair_stopped"] == 1.0
    assert accuracy(model, class3["forget"]) <= auto.forget_tol
    # the same budget of plain retraining on this retain data does revive the class
    unguarded = copy.deepcopy(trained_mlp)
    SSDAuto(alpha_range=(0.05, 0.1), target_forget_acc=0.0, repair_epochs=0,
            cache=ImportanceCache()).unlearn(unguarded, class3["forget"], leaky_retain,
                                             full=class3["full"])
    from neuroplastic.training import train_epochs

    train_epochs(unguarded, leaky_retain, epochs=1, lr=1e-3)
    assert accuracy(unguarded, class3["forget"]) > 0.5


def search_trace(method: SSDAuto, threshold: float) -> tuple[tuple[float, float] | None, list]:
    """``_choose`` against a synthetic model that forgets (accuracy 0) once alpha <= threshold,
    at any lambda, and keeps its retain accuracy: the oracle is the threshold itself."""
    calls = []

    def forget_acc(alpha: float, lam: float, exact: bool = False) -> float:
        calls.append((alpha, lam))
        return 0.0 if alpha <= threshold else 1.0

    choice = method._choose(forget_acc, lambda alpha, lam: 1.0, base_forget=1.0, base_retain=1.0, goal=0.01)
    return choice, calls


def test_below_alpha_range_only_when_nothing_inside_meets_the_target():
    # the goal is reachable only at alpha <= 0.3: the search goes below alpha_range's low end
    choice, _ = search_trace(SSDAuto(), threshold=0.3)
    assert choice is not None and 0.3 / (10 ** (1 / 2 ** 8)) ** 2 < choice[0] <= 0.3 and choice[1] == 1.0
    # with the floor at the range's low end (the old search) it stops at alpha 1, missing it
    choice, _ = search_trace(SSDAuto(alpha_floor=1.0), threshold=0.3)
    assert choice == (1.0, 0.01)  # the most aggressive candidate tried, as before
    # a goal met inside the range: exactly the same candidates with and without the floor
    assert search_trace(SSDAuto(), threshold=5.0) == search_trace(SSDAuto(alpha_floor=1.0), threshold=5.0)
    with pytest.raises(NeuroplasticError, match="alpha_floor must be > 0"):
        SSDAuto(alpha_floor=0.0)


def test_stopping_an_infeasible_candidate_early_changes_no_choice(trained_mlp, class3, monkeypatch):
    """A candidate's forget accuracy stops counting once it is surely above the goal: the
    search then chooses the same candidate, with the same weights and accuracies, as when
    every candidate is counted to the end (the oracle), in fewer forward passes; the trace
    marks the stopped counts as lower bounds of the full ones."""
    import neuroplastic.forget.ssd_auto as ssd_auto

    real = ssd_auto.forget_accuracy
    batches = {"early": 0, "full": 0}

    def counted(which):  # type: ignore[no-untyped-def]
        def count(model, forget, *, above=None):  # type: ignore[no-untyped-def]
            calls = []
            original = model.forward

            def forward(x):  # type: ignore[no-untyped-def]
                calls.append(1)
                return original(x)

            model.forward = forward
            try:
                return real(model, forget, above=above if which == "early" else None)
            finally:
                del model.forward
                batches[which] += len(calls)
        return count

    runs = {}
    cache = ImportanceCache()
    x, y = (torch.cat(t) for t in zip(*class3["forget"], strict=True))
    forget = [(x[i:i + 16], y[i:i + 16]) for i in range(0, len(y), 16)]  # several batches to stop in
    for which in ("full", "early"):
        monkeypatch.setattr(ssd_auto, "forget_accuracy", counted(which))
        model = copy.deepcopy(trained_mlp)
        # an interior alpha: the bisection meets infeasible candidates
        result = SSDAuto(cache=cache, repair_epochs=0, alpha_range=(1.0, 1000.0)).unlearn(
            model, forget, class3["retain"], full=class3["full"])
        runs[which] = (result, model)
    (full, full_model), (early, early_model) = runs["full"], runs["early"]
    assert (early.metrics["alpha"], early.metrics["lam"]) == (full.metrics["alpha"], full.metrics["lam"])
    assert 1.0 < early.metrics["alpha"] < 1000.0
    assert early.metrics["search_forget_acc"] == full.metrics["search_forget_acc"]
    assert all(torch.equal(a, b) for a, b in zip(early_model.state_dict().values(),
                                                 full_model.state_dict().values(), strict=True))
    assert batches["early"] < batches["full"], batches
    exact = {(r["alpha"], r["lam"]): r["forget_acc"] for r in full.trace}
    stopped = [r for r in early.trace if r.get("forget_acc_is_lower_bound")]
    assert stopped and all(r["forget_acc"] <= exact[r["alpha"], r["lam"]] for r in stopped)
    goal = early.metrics["target_forget_acc"] + SSDAuto().forget_tol
    assert all(r["forget_acc"] > goal for r in stopped)
