"""Baselines: retrain is a true re-initialisation; the others move away from the forget set."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from neuroplastic import NeuroplasticError
from neuroplastic.evaluate import accuracy
from neuroplastic.forget import Finetune, NegGradPlus, RandomLabels, Retrain
from neuroplastic.models import MLP
from neuroplastic.training import reinitialize_


def test_reinitialize_matches_a_fresh_seeded_model():
    torch.manual_seed(123)
    model = MLP(64, 10, hidden=(32,))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    reinitialize_(model, seed=7)
    torch.manual_seed(7)
    fresh = MLP(64, 10, hidden=(32,))
    for (name, a), b in zip(model.state_dict().items(), fresh.state_dict().values(), strict=True):
        assert torch.equal(a, b), name  # every layer, not only the head


def test_reinitialize_refuses_modules_it_cannot_reset():
    class Scaled(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.scale = nn.Parameter(torch.ones(3))
            self.fc = nn.Linear(3, 2)

    model = Scaled()
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(NeuroplasticError, match="'scale'"):
        reinitialize_(model)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_retrain_from_scratch_never_sees_the_forget_class(trained_mlp, class3):
    model = copy.deepcopy(trained_mlp)
    Retrain(epochs=10).unlearn(model, class3["forget"], class3["retain"])
    assert accuracy(model, class3["forget"]) == 0.0  # the class was never a target
    assert accuracy(model, class3["test_retain"]) > 0.9


def test_retrain_with_factory(trained_mlp, class3):
    model = copy.deepcopy(trained_mlp)
    Retrain(epochs=1, factory=lambda: MLP(64, 10, hidden=(128,))).unlearn(
        model, class3["forget"], class3["retain"])
    assert not torch.equal(model.net[1].weight, trained_mlp.net[1].weight)


@pytest.mark.parametrize("method", [Finetune(epochs=2), NegGradPlus(epochs=1),
                                    RandomLabels(epochs=1)], ids=lambda m: m.name)
def test_baselines_reduce_forget_accuracy(trained_mlp, class3, method):
    model = copy.deepcopy(trained_mlp)
    method.unlearn(model, class3["forget"], class3["retain"])
    assert accuracy(model, class3["forget"]) < accuracy(trained_mlp, class3["forget"]) - 0.2


def test_baseline_settings_are_checked():
    with pytest.raises(NeuroplasticError, match="beta"):
        NegGradPlus(beta=1.5)
    with pytest.raises(NeuroplasticError, match="epochs"):
        Finetune(epochs=0)
