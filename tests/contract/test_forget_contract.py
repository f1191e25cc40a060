"""Every registered forget method honours the shared contract."""

from __future__ import annotations

import copy

import pytest
import torch

from neuroplastic import NeuroplasticError, registry
from neuroplastic.hooks import count_hooks
from neuroplastic.importance import ImportanceCache
from tests.conftest import TinyNet, tiny_batches

FORGET_METHODS = [entry.name for entry in registry.available("forget")]
FAST = {"retrain": {"epochs": 2}, "finetune": {"epochs": 1}, "neggrad+": {"epochs": 1},
        "random-labels": {"epochs": 1}}


def make(name: str):
    method = registry.create(name, kind="forget", **FAST.get(name, {}))
    if hasattr(method, "cache"):
        method.cache = ImportanceCache()
    return method


@pytest.fixture
def model() -> TinyNet:
    torch.manual_seed(0)
    return TinyNet()


def same_state(model, before) -> bool:
    return all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_registry_lists_the_required_methods():
    assert {"ssd", "lfssd", "ssd-auto", "finetune", "neggrad+", "random-labels",
            "retrain"} <= set(FORGET_METHODS)
    with pytest.raises(NeuroplasticError, match="registered: "):
        registry.get("nope", kind="forget")


@pytest.mark.parametrize("name", FORGET_METHODS)
def test_valid_request_changes_the_model_and_reports_time(name, model):
    forget = [(3 * x, torch.zeros_like(y)) for x, y in tiny_batches(n=8, seed=1)]
    retain = tiny_batches(n=200, seed=2)
    before = copy.deepcopy(model.state_dict())
    result = make(name).unlearn(model, forget, retain, holdout=tiny_batches(n=16, seed=9))
    assert not same_state(model, before)
    assert result.metrics["seconds"] > 0 and result.metrics["method"] == name
    assert count_hooks(model) == 0 and not model.training


@pytest.mark.parametrize("name", FORGET_METHODS)
@pytest.mark.parametrize("case", ["empty forget", "shape mismatch", "wrong model input",
                                  "generator", "nan input"])
def test_bad_input_is_one_clear_error_and_changes_nothing(name, case, model):
    retain = tiny_batches(n=40, seed=2)
    forget = tiny_batches(n=8, seed=1)
    if case == "empty forget":
        forget = []
    elif case == "shape mismatch":
        forget = [(torch.randn(4, 1, 5, 5), torch.zeros(4, dtype=torch.long))]
    elif case == "wrong model input":
        forget = [(torch.randn(4, 1, 5, 5), torch.zeros(4, dtype=torch.long))]
        retain = [(torch.randn(4, 1, 5, 5), torch.zeros(4, dtype=torch.long))]
    elif case == "generator":
        forget = (b for b in tiny_batches(n=8))
    elif case == "nan input":
        forget = [(torch.full((4, 1, 4, 4), float("nan")), torch.zeros(4, dtype=torch.long))]
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(NeuroplasticError) as info:
        make(name).unlearn(model, forget, retain)
    assert "\n" not in str(info.value)
    assert same_state(model, before)
    assert count_hooks(model) == 0


@pytest.mark.parametrize("name", FORGET_METHODS)
def test_error_midway_restores_every_weight(name, model, monkeypatch):
    """An intervention that fails after it started writing leaves the model bit-identical."""
    import neuroplastic.forget.baselines as baselines
    import neuroplastic.forget.ssd as ssd
    import neuroplastic.forget.ssd_auto as ssd_auto

    method = make(name)
    calls = {"n": 0}

    def fail_at(real, call: int):
        def wrapped(*args, **kwargs):
            calls["n"] += 1
            out = real(*args, **kwargs)  # really modify weights first
            if calls["n"] >= call:
                raise RuntimeError("injected failure")
            return out
        return wrapped

    if name in {"neggrad+", "random-labels"}:  # fails after two optimizer steps
        monkeypatch.setattr(method, "pair_loss", fail_at(method.pair_loss, 3))
    else:  # fails right after the dampening / the training loop wrote the weights
        module = {"ssd": ssd, "lfssd": ssd, "ssd-auto": ssd_auto}.get(name, baselines)
        attr = "dampen_" if module is not baselines else "train_epochs"
        monkeypatch.setattr(module, attr, fail_at(getattr(module, attr), 1))
    forget = [(3 * x, torch.zeros_like(y)) for x, y in tiny_batches(n=8, seed=1)]
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(RuntimeError, match="injected"):
        method.unlearn(model, forget, tiny_batches(n=200, seed=2),
                       holdout=tiny_batches(n=16, seed=9))
    assert calls["n"] >= 1
    assert same_state(model, before)
