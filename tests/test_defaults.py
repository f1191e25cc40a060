"""Every registered continual, learn, adapt and shift method on its defaults, on every
default scenario it supports (epochs cut to keep the suite fast): the weights end finite
and the accuracy above chance, or the method refuses the scenario in one line."""

from __future__ import annotations

import math

import pytest
import torch

from neuroplastic import registry
from neuroplastic.cli.continual import stream_chance
from neuroplastic.continual import ContinualRecipe, run_stream
from neuroplastic.data import digits
from neuroplastic.data.streams import load_stream
from neuroplastic.errors import NeuroplasticError
from neuroplastic.evaluate.health import CHANCE_MARGIN, non_finite
from neuroplastic.models import MLP

SCENARIOS = [("split-digits", "task"), ("split-digits", "class"), ("permuted-digits", "domain"),
             ("permuted-digits", "task"), ("permuted-mnist1d", "domain")]


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[f"{s}-{m}" for s, m in SCENARIOS])
@pytest.mark.parametrize("name", [e.name for e in registry.available("continual")])
def test_continual_method_on_defaults(name, scenario):
    stream = load_stream(scenario[0], setting=scenario[1], seed=0)
    torch.manual_seed(0)
    model = MLP(math.prod(stream.input_shape), stream.num_outputs, hidden=(256, 256))
    method = registry.create(name, kind="continual")
    # the CLI's recipe; epochs cut on the permuted streams (split-digits is small: all 25)
    recipe = ContinualRecipe(epochs={"split-digits": 25, "permuted-digits": 4}.get(scenario[0], 3))
    if method.needs_task_labels and stream.setting != "task":
        with pytest.raises(NeuroplasticError, match="needs task labels"):
            run_stream(model, stream, method, recipe)
        return
    result = run_stream(model, stream, method, recipe)
    assert non_finite(model) == [], name
    assert result.metrics["acc"] >= stream_chance(stream) + CHANCE_MARGIN, (name, result.metrics["acc"])


@pytest.mark.parametrize("rule", [e.name for e in registry.available("learn")])
def test_learn_rule_on_defaults(rule):
    from neuroplastic.local.runner import learn

    result = learn(rule, digits(), epochs=3, compare=False, measure_robustness=False)
    run = result.runs[rule]
    assert non_finite(run.model) == []
    assert run.metrics["test_acc"] >= 0.1 + CHANCE_MARGIN, (rule, run.metrics["test_acc"])


@pytest.mark.parametrize("method", [e.name for e in registry.available("adapt")])
def test_adapt_method_on_defaults(method):
    from neuroplastic.adapt.runner import run_corruptions
    from neuroplastic.training import TrainConfig, fit

    data = digits()
    torch.manual_seed(0)
    model = MLP(64, 10, hidden=(64,), batch_norm=True)
    fit(model, data.train, TrainConfig(epochs=5))
    x, y = data.test.tensors
    result = run_corruptions(model.eval(), x, y, [("gaussian_noise", 3), ("contrast", 3)], method=method)
    assert non_finite(model) == []
    for error in result.metrics().values():
        assert error == error  # no NaN anywhere
    assert result.clean_acc_after >= 0.1 + CHANCE_MARGIN, (method, result.clean_acc_after)
    assert result.metrics()[f"mean_error.{method}"] <= 1 - (0.1 + CHANCE_MARGIN)


@pytest.mark.parametrize("rule", [e.name for e in registry.available("shift")])
def test_shift_rule_on_defaults(rule):
    from neuroplastic.adapt.homeostasis import ConceptShiftStream, shift_mlp, train_shift

    data = digits()
    torch.manual_seed(0)
    model = shift_mlp(64, 10)
    stream = ConceptShiftStream(data.train, swaps=0, epochs=3, batch_size=10, seed=0)
    from neuroplastic.cli.adapt import SHIFT_LR

    result = train_shift(model, stream, method=rule, lr=SHIFT_LR, test=data.test)  # the CLI's eta0
    assert non_finite(model) == []
    assert result.metrics()["final_test_acc"] >= 0.1 + CHANCE_MARGIN, (rule, result.metrics())
