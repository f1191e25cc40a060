"""The full-data importance cache: computed once, reused from memory and disk."""

from __future__ import annotations

import copy

import torch

from neuroplastic.data import loader
from neuroplastic.forget import SSD
from neuroplastic.importance import Fisher, ImportanceCache, data_fingerprint, model_fingerprint
from tests.conftest import tiny_batches


class CountingFisher(Fisher):
    """Fisher that counts how often it runs over data."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def estimate(self, model, data, *, loss_fn=None):
        self.calls += 1
        return super().estimate(model, data, loss_fn=loss_fn)


def test_second_request_reuses_full_importance(tiny_model):
    estimator = CountingFisher()
    cache = ImportanceCache()
    full = tiny_batches(n=40)
    first = cache.get_or_compute(estimator, tiny_model, full)
    second = cache.get_or_compute(estimator, tiny_model, full)
    assert estimator.calls == 1 and (cache.hits, cache.misses) == (1, 1)
    assert all(torch.equal(first[k], second[k]) for k in first)


def test_disk_entries_survive_a_new_process_cache(tiny_model, tmp_path):
    full = tiny_batches(n=40)
    first = ImportanceCache(directory=tmp_path).get_or_compute(Fisher(), tiny_model, full)
    estimator = CountingFisher()
    fresh = ImportanceCache(directory=tmp_path)
    again = fresh.get_or_compute(estimator, tiny_model, full)
    assert estimator.calls == 0 and fresh.hits == 1
    assert len(list(tmp_path.glob("*.safetensors"))) == 1
    assert all(torch.equal(first[k], again[k]) for k in first)


def test_changed_model_data_or_estimator_misses(tiny_model):
    cache = ImportanceCache()
    full = tiny_batches(n=40)
    cache.get_or_compute(Fisher(), tiny_model, full)
    other = copy.deepcopy(tiny_model)
    with torch.no_grad():
        other.fc.bias[0] += 1e-3
    cache.get_or_compute(Fisher(), other, full)
    cache.get_or_compute(Fisher(), tiny_model, tiny_batches(n=40, seed=5))
    cache.get_or_compute(Fisher(mode="per_sample"), tiny_model, full)
    assert cache.misses == 4 and cache.hits == 0


def test_fingerprints_see_order_and_content(tiny_model):
    data = tiny_batches(n=16)
    assert data_fingerprint(data) == data_fingerprint(list(data))
    assert data_fingerprint(data) != data_fingerprint(data[::-1])
    dataset = torch.utils.data.TensorDataset(torch.randn(20, 1, 4, 4), torch.zeros(20).long())
    shuffled = loader(dataset, batch_size=4, shuffle=True)
    assert data_fingerprint(shuffled) != data_fingerprint(shuffled)  # new order every pass
    before = model_fingerprint(tiny_model)
    tiny_model.bn.running_mean.add_(1.0)  # buffers count too
    assert model_fingerprint(tiny_model) != before


def test_ssd_second_request_only_estimates_the_forget_set(tiny_model):
    estimator = CountingFisher()
    cache = ImportanceCache()
    retain, full = tiny_batches(n=64, seed=2), None
    forget_a = tiny_batches(n=8, seed=3)
    forget_b = tiny_batches(n=8, seed=4)
    full = retain + forget_a  # the training set as the model saw it
    ssd = SSD(estimator=estimator, cache=cache)
    first = ssd.unlearn(copy.deepcopy(tiny_model), forget_a, retain, full=full)
    second = ssd.unlearn(copy.deepcopy(tiny_model), forget_b, retain, full=full)
    assert estimator.calls == 3  # full + forget_a, then only forget_b
    assert first.metrics["cache_hit"] == 0.0 and second.metrics["cache_hit"] == 1.0


def test_tensor_fast_path_fingerprint_equals_iterating_the_loader():
    from neuroplastic.batches import ConcatData

    dataset = torch.utils.data.TensorDataset(torch.randn(21, 1, 4, 4), torch.arange(21) % 3)
    for drop_last in (False, True):
        fast = torch.utils.data.DataLoader(dataset, batch_size=8, drop_last=drop_last)
        batches = list(fast)  # a list takes the slow, iterating path
        assert data_fingerprint(fast) == data_fingerprint(batches)
        assert data_fingerprint(ConcatData(fast, fast)) == data_fingerprint(batches + batches)
