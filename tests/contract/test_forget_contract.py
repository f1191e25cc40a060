"""Every registered forget method honours the shared contract."""

from __future__ import annotations

import copy

import pytest
import torch

from neuroplastic import NeuroplasticError, registry
from neuroplastic.importance import ImportanceCache
from tests.clean import assert_clean
from tests.conftest import TinyNet, tiny_batches
from tests.faults import InjectedFailure, forward_seam, write_seam

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
    assert_clean(model)
    assert not model.training


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
    assert_clean(model)


def request(model: TinyNet) -> tuple[list, list, list]:
    forget = [(3 * x, torch.zeros_like(y)) for x, y in tiny_batches(n=8, seed=1)]
    return forget, tiny_batches(n=200, seed=2), tiny_batches(n=16, seed=9)


@pytest.mark.parametrize("where", ["first write", "half the writes", "forward after a write"])
@pytest.mark.parametrize("name", FORGET_METHODS)
def test_error_midway_restores_every_weight(name, where, model):
    """A failure injected at a generic seam -- right after an in-place write to a parameter,
    or at the first forward pass after one -- leaves the model bit-identical and clean. A dry
    run on a copy finds where the seam is for this method; nothing depends on its name."""
    forget, retain, holdout = request(model)
    dry = copy.deepcopy(model)
    with write_seam(dry) as writes, forward_seam(dry) as forwards:
        make(name).unlearn(dry, forget, retain, holdout=holdout)
    assert writes.writes >= 1  # every method changes the weights on this request
    if where == "forward after a write" and forwards.first_after_write is None:
        pytest.skip(f"{name} runs no forward pass after its first write (covered by the write seam)")
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(InjectedFailure):
        if where == "forward after a write":
            with forward_seam(model, fail_at=forwards.first_after_write):
                make(name).unlearn(model, forget, retain, holdout=holdout)
        else:
            fail_at = 1 if where == "first write" else max(1, writes.writes // 2)
            with write_seam(model, fail_at=fail_at) as seam:
                make(name).unlearn(model, forget, retain, holdout=holdout)
            assert seam.writes >= fail_at
    assert same_state(model, before)
    assert_clean(model)
