"""U-LiRA (Hayes et al. 2024): its pieces against hand computations and scipy, and the
attack end to end on a small memorising model: a model retrained without the targets
scores AUC about 0.5; a model that unlearned nothing is caught."""

from __future__ import annotations

import math

import pytest
import torch
from scipy.stats import norm
from torch import nn
from torch.utils.data import TensorDataset

from neuroplastic.data.splits import loader
from neuroplastic.evaluate.ulira import (
    attack_metrics,
    balanced_memberships,
    likelihood_ratio,
    logit_confidence,
    train_shadows,
    ulira,
)
from neuroplastic.training import train_epochs


def test_every_sample_is_in_exactly_half_of_the_shadows_and_every_shadow_holds_half_the_candidates():
    strata = (torch.arange(50) < 20).long()  # 20 candidates
    members = balanced_memberships(50, 8, seed=3, strata=strata)
    assert members.shape == (8, 50) and bool((members.sum(0) == 4).all())
    assert bool((members[:, :20].sum(1) == 10).all())  # the same request size in every model
    assert bool((members[0::2] ^ members[1::2]).all())  # complementary pairs
    assert not torch.equal(members, balanced_memberships(50, 8, seed=4, strata=strata))


def test_logit_confidence_by_hand():
    model = nn.Identity()
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 3.0]])
    labels = torch.tensor([0, 1])
    phi = logit_confidence(model, TensorDataset(logits, labels))
    p = torch.softmax(logits.double(), 1)[[0, 1], labels]
    torch.testing.assert_close(phi.double(), torch.log(p / (1 - p)), atol=1e-6, rtol=0)


@pytest.mark.parametrize("variance", ["per_example", "pooled", "global"])
def test_likelihood_ratio_matches_scipy(variance):
    gen = torch.Generator().manual_seed(0)
    scores = torch.randn(8, 5, generator=gen) * 2
    inside = balanced_memberships(5, 8, seed=1)
    target = torch.randn(5, generator=gen)
    got = likelihood_ratio(target, scores, inside, variance=variance)
    ins = [scores[inside[:, c], c].double().numpy() for c in range(5)]
    outs = [scores[~inside[:, c], c].double().numpy() for c in range(5)]
    var_in = [a.var(ddof=1) for a in ins]
    var_out = [a.var(ddof=1) for a in outs]
    if variance == "pooled":  # the mean of the per-example variances
        var_in, var_out = [sum(var_in) / 5] * 5, [sum(var_out) / 5] * 5
    if variance == "global":  # LiRA's fixed variance: every in (out) score of every example at once
        all_in = scores[inside].double().numpy()
        all_out = scores[~inside].double().numpy()
        var_in, var_out = [all_in.var(ddof=1)] * 5, [all_out.var(ddof=1)] * 5
    for c in range(5):
        expected = (norm.logpdf(float(target[c]), ins[c].mean(), math.sqrt(var_in[c]))
                    - norm.logpdf(float(target[c]), outs[c].mean(), math.sqrt(var_out[c])))
        assert float(got[c]) == pytest.approx(expected, rel=1e-5, abs=1e-5)


def test_attack_metrics_by_hand():
    # 4 members, 100 non-members; scores rank 3 members above every non-member
    scores = torch.cat([torch.tensor([10.0, 9.0, 8.0, -5.0]), torch.linspace(-1, 1, 100)])
    member = torch.cat([torch.ones(4), torch.zeros(100)]).bool()
    figures = attack_metrics(scores, member)
    assert figures["tpr_at_1fpr"] == pytest.approx(0.75)  # 3 of 4 before any false positive
    assert figures["auc"] == pytest.approx((3 * 100 + 0) / 400)


def memorisation_task(seed: int = 0):
    """Random labels on random inputs: only memorisation helps, so membership shows."""
    gen = torch.Generator().manual_seed(seed)
    x, y = torch.randn(400, 16, generator=gen), torch.randint(0, 4, (400,), generator=gen)
    return TensorDataset(x, y)


def build(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(16, 128), nn.ReLU(), nn.Linear(128, 4))


def train(model: nn.Module, data: TensorDataset) -> None:
    train_epochs(model, loader(data, batch_size=32, shuffle=True), epochs=40, lr=3e-3)


def test_ulira_over_targets_is_chance_for_retraining_caught_without_unlearning():
    """Each shadow in turn is the target (trained exactly as the others): retraining without
    the request scores AUC about 0.5 on every target; unlearning nothing is caught."""
    pool = memorisation_task()
    candidates = torch.arange(0, 200)
    shadows = train_shadows(pool, build, train, shadows=12, seed=0, candidates=candidates)

    def retrain(model, forget, retain, trained):
        fresh = build(1000 + len(retain))
        train(fresh, retain)
        model.load_state_dict(fresh.state_dict())

    def nothing(model, forget, retain, trained):
        pass

    chance = ulira(shadows, pool=pool, candidates=candidates, unlearn=retrain)
    caught = ulira(shadows, pool=pool, candidates=candidates, unlearn=nothing)
    assert len(chance.per_target) == 12
    assert 0.4 <= chance.auc <= 0.6, chance.auc
    assert caught.auc > 0.9 and caught.tpr_at_5fpr > 0.3, (caught.auc, caught.tpr_at_5fpr)
    metrics = caught.metrics()
    assert metrics["ulira.targets"] == 12 and metrics["ulira.auc_std"] > 0


def test_identity_unlearning_scores_exactly_the_originals_auc():
    """A method that changes nothing cannot come out below (or above) the original."""
    pool = memorisation_task(seed=1)
    candidates = torch.arange(100, 300)
    shadows = train_shadows(pool, build, train, shadows=8, seed=1, candidates=candidates)
    calls = []

    def nothing(model, forget, retain, trained):
        calls.append(len(forget))

    def identity(model, forget, retain, trained):
        calls.append(len(forget))
        with torch.no_grad():
            for p in model.parameters():
                p.copy_(p.clone())

    original = ulira(shadows, pool=pool, candidates=candidates, unlearn=nothing)
    unlearned = ulira(shadows, pool=pool, candidates=candidates, unlearn=identity)
    assert abs(unlearned.auc - original.auc) <= 0.01
    assert set(calls) == {100}  # every model unlearns a request of the same size
