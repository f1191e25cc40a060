"""ssd-auto: alpha chosen per request, repair when dampening alone damages."""

from __future__ import annotations

import copy

import pytest
import torch

from neuroplastic import NeuroplasticError
from neuroplastic.data import loader, random_samples
from neuroplastic.evaluate import accuracy
from neuroplastic.forget import SSD, Retrain, SSDAuto
from neuroplastic.importance import ImportanceCache, ImportanceEstimator, LossFree


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
    target = accuracy(trained_mlp, holdout)
    assert result.metrics["target_forget_acc"] == pytest.approx(target)
    # the search's goal: forget_tol above; the repair's: 1.645 standard errors of
    # (forget accuracy - holdout accuracy)
    tol = SSDAuto().forget_tol
    assert result.metrics["goal_forget_acc"] == pytest.approx(target + tol)
    spread = target * (1 - target) * (1 / len(scenario.forget) + 1 / len(digits_data.val))
    assert result.metrics["repair_goal_forget_acc"] == pytest.approx(target + 1.645 * spread ** 0.5)
    assert 1.645 * spread ** 0.5 > tol  # 126 samples: the spread decides
    tight = SSDAuto(holdout_z=0.0, cache=ImportanceCache()).unlearn(
        copy.deepcopy(trained_mlp), forget, retain, holdout=holdout)
    assert tight.metrics["repair_goal_forget_acc"] == pytest.approx(target + tol)


def test_the_repair_holds_a_holdout_request_to_its_own_goal(trained_mlp, digits_data):
    """The repair of a holdout-target request gets the looser goal and may ascend; a class
    request's repair gets the search's goal and never ascends."""
    from neuroplastic.data import full_class

    seen = []

    class Recording(SSDAuto):
        def _guarded_repair(self, model, forget, retain, goal, redampen, ascend):  # type: ignore[no-untyped-def]
            seen.append((goal, ascend))
            return super()._guarded_repair(model, forget, retain, goal, redampen, ascend)

    holdout = loader(digits_data.val, batch_size=64)
    metrics = []
    for scenario in (random_samples(digits_data, fraction=0.1, seed=1), full_class(digits_data, 3)):
        method = Recording(retain_tol=-1.0, cache=ImportanceCache())  # every dampened request repairs
        result = method.unlearn(copy.deepcopy(trained_mlp), loader(scenario.forget, batch_size=64),
                                loader(scenario.retain, batch_size=64),
                                full=loader(digits_data.train, batch_size=64), holdout=holdout)
        assert result.metrics["dampened"] == 1.0
        metrics.append(result.metrics)
    (random_goal, random_ascends), (class_goal, class_ascends) = seen
    assert random_ascends and not class_ascends
    assert random_goal == metrics[0]["repair_goal_forget_acc"] > metrics[0]["goal_forget_acc"]
    assert class_goal == metrics[1]["repair_goal_forget_acc"] == metrics[1]["goal_forget_acc"]


def test_bad_settings_are_refused():
    with pytest.raises(NeuroplasticError):
        SSDAuto(alpha_range=(5.0, 1.0))
    with pytest.raises(NeuroplasticError):
        SSDAuto(target_forget_acc=1.5)
    with pytest.raises(NeuroplasticError, match="ascent_beta"):
        SSDAuto(ascent_beta=1.0)
    with pytest.raises(NeuroplasticError, match="holdout_z"):
        SSDAuto(holdout_z=-1.0)


def test_repair_never_revives_what_was_forgotten(trained_mlp, class3, digits_data):
    """Retain data that still holds the forgotten behaviour (like unidentified poisoned
    samples): an unguarded finetune would relearn it; the guarded repair keeps the goal."""
    scenario = class3["scenario"]
    leaky = torch.utils.data.ConcatDataset([scenario.retain] + [scenario.forget] * 5)
    leaky_retain = loader(leaky, batch_size=64, shuffle=True)
    model = copy.deepcopy(trained_mlp)
    auto = SSDAuto(alpha_range=(0.05, 0.1), target_forget_acc=0.0, cache=ImportanceCache())
    result = auto.unlearn(model, class3["forget"], leaky_retain, full=class3["full"])
    assert result.metrics["repaired"] == 1.0 and result.metrics["repair_reverted"] == 1.0
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


class Blind(ImportanceEstimator):
    """An importance that sees nothing (all zeros), as the loss's squared gradient sees
    nothing on samples a model fits with p ~ 1: no entry is ever selected."""

    def estimate(self, model, data, *, loss_fn=None):  # type: ignore[no-untyped-def]
        return {name: torch.zeros_like(p) for name, p in self.targets.named_parameters(model)}


def test_label_free_importance_takes_over_when_the_first_cannot_forget(trained_mlp, class3):
    """With an importance under which no alpha reaches the goal, ssd-auto searches again with
    LFSSD's label-free importance: the result is exactly ssd-auto run with that importance
    (same choice, same weights), and it meets the goal the blind search missed."""
    retain = loader(class3["scenario"].retain, batch_size=64)  # unshuffled: the same retain sample
    runs = {}
    for name, kwargs in (("blind", {"estimator": Blind()}),
                         ("blind, no fallback", {"estimator": Blind(), "label_free_fallback": False}),
                         ("label-free", {"estimator": LossFree()})):
        model = copy.deepcopy(trained_mlp)
        result = SSDAuto(cache=ImportanceCache(), repair_epochs=0, **kwargs).unlearn(
            model, class3["forget"], retain, full=class3["full"])
        runs[name] = (result, model)
    (fallback, fallback_model), (blind, blind_model), (free, free_model) = runs.values()
    goal = fallback.metrics["target_forget_acc"] + SSDAuto().forget_tol
    assert blind.metrics["label_free"] == 0.0 and accuracy(blind_model, class3["forget"]) > 0.9
    assert fallback.metrics["label_free"] == 1.0 and free.metrics["label_free"] == 0.0
    chosen = {name: (result.metrics["alpha"], result.metrics["lam"]) for name, (result, _) in runs.items()}
    assert chosen["blind"] == chosen["label-free"]
    assert all(torch.equal(a, b) for a, b in zip(fallback_model.state_dict().values(),
                                                 free_model.state_dict().values(), strict=True))
    assert accuracy(fallback_model, class3["forget"]) <= goal
    # the blind candidates come first in the trace, then the label-free ones (as searched alone)
    searched = [r for r in fallback.trace if r["label_free"] == 1.0]
    assert [(r["alpha"], r["lam"]) for r in searched] == [(r["alpha"], r["lam"]) for r in free.trace]
    assert "label_free_full_importance_seconds" in fallback.metrics
    # without the training data, D is built from retain and forget for both importances
    model = copy.deepcopy(trained_mlp)
    without_full = SSDAuto(cache=ImportanceCache(), repair_epochs=0, estimator=Blind()).unlearn(
        model, class3["forget"], retain)
    assert without_full.metrics["label_free"] == 1.0 and accuracy(model, class3["forget"]) <= goal


def test_a_request_met_by_the_first_importance_never_computes_the_label_free_one(trained_mlp, class3):
    retain = loader(class3["scenario"].retain, batch_size=64)
    runs = []
    for fallback in (True, False):
        model = copy.deepcopy(trained_mlp)
        result = SSDAuto(cache=ImportanceCache(), repair_epochs=0, label_free_fallback=fallback).unlearn(
            model, class3["forget"], retain, full=class3["full"])
        runs.append((result, model))
    (on, on_model), (off, off_model) = runs
    assert on.metrics["target_reached"] == 1.0 and on.metrics["label_free"] == 0.0
    assert "label_free_full_importance_seconds" not in on.metrics
    assert on.trace == off.trace
    assert all(torch.equal(a, b) for a, b in zip(on_model.state_dict().values(),
                                                 off_model.state_dict().values(), strict=True))


class StopAtRevival(SSDAuto):
    """The earlier repair rule, as the oracle of what stopping gives: the first check that
    sees the forgotten behaviour back ends the repair at the last state that met the goal."""

    def _guarded_repair(self, model, forget, retain, goal, redampen, ascend):  # type: ignore[no-untyped-def]
        from neuroplastic.intervene.atomic import restore_, snapshot
        from neuroplastic.training import train_epochs

        good, revived = snapshot(model), []

        def check(step: int) -> bool:
            if step % self.repair_check_every:
                return False
            if accuracy(model, forget) > goal:
                revived.append(step)
                return True
            for key, tensor in model.state_dict().items():
                good[key].copy_(tensor)
            return False

        steps = train_epochs(model, retain, epochs=self.repair_epochs, lr=self.repair_lr, should_stop=check)
        if revived:
            restore_(model, good)
        return {"repair_steps": float(steps), "repair_reverted": float(bool(revived))}


def test_a_repair_that_revives_the_class_dampens_again_and_keeps_repairing(trained_mlp, digits_data):
    """Where a few repair steps bring a forgotten class back above the goal (the chosen
    dampening sits at the goal's edge), the request's dampening is applied again and the
    repair runs its whole budget: never worse than stopping there, and here better."""
    from neuroplastic.data import full_class

    revived = 0
    for cls in range(10):
        scenario = full_class(digits_data, cls)
        runs = {}
        for method in (SSDAuto, StopAtRevival):
            model = copy.deepcopy(trained_mlp)
            retain = loader(scenario.retain, batch_size=64, shuffle=True, seed=0)
            result = method(cache=ImportanceCache()).unlearn(
                model, loader(scenario.forget, batch_size=64), retain,
                full=loader(digits_data.train, batch_size=64))
            test_acc = accuracy(model, loader(scenario.test_retain, batch_size=256))
            runs[method] = (result.metrics, model, test_acc)
        (now, model, test_now), (stopped, stopped_model, test_stopped) = runs[SSDAuto], runs[StopAtRevival]
        goal = now["target_forget_acc"] + SSDAuto().forget_tol
        assert accuracy(model, loader(scenario.forget, batch_size=64)) <= goal
        if stopped.get("repair_reverted"):  # the old rule stopped: the new one went on
            revived += 1
            assert now["repair_redampened"] >= 1 and now["repair_reverted"] == 0.0
            assert now["repair_steps"] > stopped["repair_steps"] and test_now >= test_stopped, cls
        else:  # nothing revived: the same repair, weight for weight
            assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(),
                                                         stopped_model.state_dict().values(), strict=True))
    assert revived >= 1  # the weaker test model revives at least one class (6, here)



def test_where_dampening_again_cannot_hold_the_goal_the_repair_ascends_the_forget_loss(
        trained_mlp, digits_data, monkeypatch):
    """The repair's rule against a slow reference loop: the forget accuracy is scripted (above
    the goal at the first check, before and after dampening again; under it from then on), so
    the second step alone is an ascent step, beta * L_retain - (1 - beta) * L_forget on the
    first forget batch, and every other step plain Adam on the retain batch."""
    from neuroplastic.forget import ssd_auto
    from neuroplastic.losses import cross_entropy

    scripted = iter([0.9, 0.9] + [0.1] * 4)
    monkeypatch.setattr(ssd_auto, "accuracy", lambda model, data: next(scripted))
    x, y = digits_data.train.tensors
    retain = [(x[i:i + 64], y[i:i + 64]) for i in range(0, 256, 64)]
    forget = [(x[300:364], y[300:364]), (x[364:400], y[364:400])]
    redampened = []
    method = SSDAuto(repair_check_every=1)
    model = copy.deepcopy(trained_mlp)
    metrics = method._guarded_repair(model, forget, retain, 0.5, redampen=lambda: redampened.append(1),
                                     ascend=True)
    assert metrics == {"repair_steps": 4.0, "repair_redampened": 1.0, "repair_ascent_steps": 1.0,
                       "repair_reverted": 0.0}
    assert redampened == [1]

    reference = copy.deepcopy(trained_mlp)
    optimizer = torch.optim.Adam(reference.parameters(), lr=method.repair_lr)
    reference.train()
    for step, (xb, yb) in enumerate(retain):
        optimizer.zero_grad(set_to_none=True)
        loss = cross_entropy(reference(xb), yb)
        if step == 1:
            beta = method.ascent_beta
            loss = beta * loss - (1 - beta) * cross_entropy(reference(forget[0][0]), forget[0][1])
        loss.backward()
        optimizer.step()
    for (name, a), b in zip(model.state_dict().items(), reference.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7, msg=name)

    # without ascend (a class request) the same script dampens again and never ascends
    scripted = iter([0.9, 0.9] + [0.1] * 4)
    model = copy.deepcopy(trained_mlp)
    metrics = method._guarded_repair(model, forget, retain, 0.5, redampen=lambda: None, ascend=False)
    assert metrics["repair_ascent_steps"] == 0.0 and metrics["repair_redampened"] == 1.0


def test_a_shown_request_announces_each_timed_phase_and_counts_its_repair_steps(trained_mlp, class3):
    """``announce`` names every phase as it starts, in the order its ``<phase>_seconds``
    metrics were written; ``progress`` counts the repair's optimizer steps out of its budget
    (the console's status line: ``unlearning with ssd-auto: repair step 12/86``)."""
    method = SSDAuto(alpha_range=(0.05, 0.1), repair_epochs=1, cache=ImportanceCache())
    phases: list[str] = []
    steps: list[tuple[int, int | None]] = []
    method.announce = phases.append
    method.progress = lambda done, total: steps.append((done, total))
    result = method.unlearn(copy.deepcopy(trained_mlp), class3["forget"], class3["retain"],
                            full=class3["full"])
    timed = [k.removesuffix("_seconds") for k in result.metrics if k.endswith("_seconds") and k != "seconds"]
    assert result.metrics["repaired"] == 1.0 and "repair" in phases
    assert phases[0] == "full_importance" and phases[-1] == "repair"
    assert list(dict.fromkeys(phases)) == timed
    budget = len(class3["retain"])  # one epoch of the retain loader's batches
    assert [done for done, _ in steps] == list(range(1, int(result.metrics["repair_steps"]) + 1))
    assert {total for _, total in steps} == {budget}


def test_a_large_forget_set_is_checked_every_half_its_batch_count(trained_mlp, digits_data, monkeypatch):
    """The repair's forget-set checks (each a pass over the whole forget set) come every
    max(repair_check_every, ceil(batches / 2)) steps: 24 forget batches, 30 repair steps ->
    checks after steps 12 and 24 and the final one (at every 5 steps it would be 7 passes)."""
    from neuroplastic.forget import ssd_auto

    passes = []
    monkeypatch.setattr(ssd_auto, "accuracy", lambda model, data: passes.append(len(data)) or 0.0)
    x, y = digits_data.train.tensors
    retain = [(x[i:i + 8], y[i:i + 8]) for i in range(0, 240, 8)]
    forget = [(x[i:i + 1], y[i:i + 1]) for i in range(300, 324)]
    method = SSDAuto(repair_check_every=5)
    assert [method.check_interval(n) for n in (1, 10, 11, 24, 86)] == [5, 5, 6, 12, 43]
    metrics = method._guarded_repair(copy.deepcopy(trained_mlp), forget, retain, 0.5,
                                     redampen=lambda: None, ascend=False)
    assert metrics["repair_steps"] == 30.0 and passes == [24, 24, 24]
