"""FSDP2 (``fully_shard``) models, 2 gloo processes on CPU: the importance estimators, SSD's
selection and ``dampen_``, ``atomic`` and the sparse masks (RigL trained by ``loop.fit``)
compute what one process computes on the unsharded model."""

from __future__ import annotations

import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

from neuroplastic import select
from neuroplastic.importance import Fisher, Gradient, LossFree, Magnitude, Taylor
from neuroplastic.importance.cache import ImportanceCache
from neuroplastic.intervene.dampen import dampen_
from tests.conftest import TinyNet, tiny_batches
from tests.test_distributed import in_group

pytest.importorskip("torch.distributed.fsdp")

ESTIMATORS = {
    "batch_sq": lambda: Fisher(mode="batch_sq"),
    "per_sample": lambda: Fisher(mode="per_sample"),
    "gradient": Gradient,
    "taylor": Taylor,
    "loss_free": LossFree,
    "magnitude": Magnitude,
}
# 17 rows in batches of 8: the last batch has 1 row, so rank 1 has no part of it
BATCHES = dict(n=17, batch=8)


def _tiny() -> TinyNet:
    torch.manual_seed(0)
    return TinyNet()  # fc.weight has 3 rows: slices of 2 and 1 (uneven)


def _mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 12), nn.Tanh(), nn.Linear(12, 3))


def _shard(model: nn.Module) -> nn.Module:
    from torch.distributed.fsdp import fully_shard

    for child in model.children():
        if any(True for _ in child.parameters()):
            fully_shard(child)
    fully_shard(model)
    return model


def _full(tensors: dict) -> dict:
    return {n: (t.full_tensor() if hasattr(t, "full_tensor") else t).detach().clone()
            for n, t in tensors.items()}


def _train_rigl(model: nn.Module, *, sharded: bool) -> tuple[dict, dict]:
    from neuroplastic import loop
    from neuroplastic.sparse.rigl import RigL

    batches = tiny_batches(n=48, batch=8, seed=1)
    if sharded:
        _shard(model)  # before the masks: fully_shard replaces every parameter
    sparsifier = RigL(model, sparsity=0.6, total_steps=12, update_frequency=3, seed=0)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05, weight_decay=1e-3)
    loop.fit(model, batches, optimizer=optimizer, epochs=2, plugins=[sparsifier])
    masks = sparsifier.masks.masks
    sparsifier.export()
    return _full(dict(model.named_parameters())), masks


def _ssd(model: nn.Module) -> tuple[dict, int, float]:
    from neuroplastic.distributed import rank_batches

    estimator = Fisher(mode="batch_sq")
    full = ImportanceCache().get_or_compute(estimator, model, tiny_batches(**BATCHES))
    forget = estimator.estimate(model, rank_batches(tiny_batches(n=8, batch=4, seed=2)))
    mask = select.ratio(forget, full, alpha=1.0)
    count = dampen_(model, forget, full, mask=mask, lam=0.5)
    return _full(dict(model.named_parameters())), count, select.fraction_selected(mask)


def _ssd_request(model: nn.Module) -> tuple[dict, dict]:
    from neuroplastic.forget.ssd import SSD

    result = SSD(alpha=1.0, lam=0.5, cache=ImportanceCache()).unlearn(
        model, tiny_batches(n=8, batch=4, seed=2), full=tiny_batches(**BATCHES))
    return _full(dict(model.named_parameters())), result.metrics


def _worker(rank: int, store_file: str, out: str) -> None:
    from neuroplastic.distributed import rank_batches
    from neuroplastic.errors import NeuroplasticError
    from neuroplastic.intervene.atomic import atomic

    def body() -> None:
        found: dict = {"scores": {}, "types": {}}
        model = _shard(_tiny())
        for name, make in ESTIMATORS.items():
            scores = make().estimate(model, rank_batches(tiny_batches(**BATCHES)))
            found["types"][name] = sorted({type(s).__name__ for s in scores.values()})
            found["scores"][name] = _full(scores)
        # each rank passing its own rows of every batch (a DistributedSampler's convention)
        own = [(x[rank::2], y[rank::2]) for x, y in tiny_batches(n=18, batch=8)]
        found["own_rows"] = _full(Fisher(mode="batch_sq").estimate(model, own))
        uneven = [(x[rank::2], y[rank::2]) for x, y in tiny_batches(**BATCHES)]  # rank 1: one batch less
        try:
            Fisher(mode="batch_sq").estimate(model, uneven)
        except NeuroplasticError as err:  # on every rank: none waits for the other
            found["uneven_refused"] = str(err)
        try:
            Fisher(mode="exact").estimate(model, tiny_batches(**BATCHES))
        except NeuroplasticError as err:
            found["exact_refused"] = str(err)
        found["ssd"] = _ssd(model)
        before = _full(dict(model.named_parameters()))
        try:
            with atomic(model):
                for p in model.parameters():
                    p.data.mul_(0)
                raise RuntimeError("failed half-way")
        except RuntimeError:
            after = _full(dict(model.named_parameters()))
            found["restored"] = all(torch.equal(after[n], before[n]) for n in before)
        found["rigl"] = _train_rigl(_mlp(), sharded=True)
        from neuroplastic.sparse import SparseMasks

        early, masks = _mlp(), SparseMasks()
        masks.prepare(early, {"1.weight": torch.rand(12, 16) > 0.5})  # before fully_shard
        _shard(early)
        optimizer = torch.optim.SGD(early.parameters(), lr=0.1)
        early(torch.randn(4, 1, 4, 4)).sum().backward()
        try:
            optimizer.step()
        except NeuroplasticError as err:
            found["attached_before"] = str(err)
        found["ssd_request"] = _ssd_request(_shard(_tiny()))
        if rank == 0:
            torch.save(found, out)

    in_group(rank, store_file, body)


@pytest.fixture(scope="module")
def sharded(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fsdp")
    out = str(folder / "found.pt")
    mp.spawn(_worker, args=(str(folder / "store"), out), nprocs=2, join=True)
    return torch.load(out, weights_only=False)


@pytest.mark.parametrize("name", list(ESTIMATORS))
def test_estimators_on_an_fsdp_model_equal_one_process(sharded, name):
    alone = ESTIMATORS[name]().estimate(_tiny(), tiny_batches(**BATCHES))
    assert sharded["types"][name] == ["DTensor"]  # sharded like the parameters
    assert sharded["scores"][name].keys() == alone.keys()
    assert all(value.abs().max() > 0 for key, value in alone.items() if key != "bn.bias")  # 0: Taylor
    for key, value in alone.items():
        torch.testing.assert_close(sharded["scores"][name][key], value, rtol=1e-5, atol=1e-10)


def test_ranks_passing_their_own_rows_score_the_joined_batches(sharded):
    joined = [(torch.cat([x[0::2], x[1::2]]), torch.cat([y[0::2], y[1::2]]))
              for x, y in tiny_batches(n=18, batch=8)]
    alone = Fisher(mode="batch_sq").estimate(_tiny(), joined)
    for key, value in alone.items():
        torch.testing.assert_close(sharded["own_rows"][key], value, rtol=1e-5, atol=1e-10)


def test_ranks_passing_different_numbers_of_batches_get_one_line_not_a_hang(sharded):
    assert "different numbers of batches" in sharded["uneven_refused"]


def test_exact_fisher_refuses_an_fsdp_model_in_one_line(sharded):
    message = sharded["exact_refused"]
    assert "FSDP" in message and "per_sample" in message and "\n" not in message


def test_ssd_selection_and_dampening_on_an_fsdp_model_equal_one_process(sharded):
    weights, count, fraction = sharded["ssd"]
    model = _tiny()
    original = _full(dict(model.named_parameters()))
    alone, alone_count, alone_fraction = _ssd(model)
    assert count == alone_count > 0 and fraction == alone_fraction  # global counts on every rank
    for key, value in alone.items():
        torch.testing.assert_close(weights[key], value, rtol=1e-5, atol=1e-7)
    assert any(not torch.equal(alone[k], original[k]) for k in alone)  # it dampened something


def test_an_ssd_request_on_an_fsdp_model_equals_one_process(sharded):
    weights, metrics = sharded["ssd_request"]
    alone, alone_metrics = _ssd_request(_tiny())
    assert metrics["selected_fraction"] == alone_metrics["selected_fraction"] > 0
    for key, value in alone.items():
        torch.testing.assert_close(weights[key], value, rtol=1e-5, atol=1e-7)


def test_masks_attached_before_fully_shard_are_an_error_at_the_first_step(sharded):
    assert "fully_shard" in sharded["attached_before"] and "\n" not in sharded["attached_before"]


def test_atomic_restores_an_fsdp_model(sharded):
    assert sharded["restored"]


def test_rigl_under_fsdp_trains_the_one_process_weights_and_masks(sharded):
    weights, masks = sharded["rigl"]
    alone_weights, alone_masks = _train_rigl(_mlp(), sharded=False)
    initial = _mlp()
    from neuroplastic.sparse.rigl import RigL

    start = RigL(initial, sparsity=0.6, total_steps=12, update_frequency=3, seed=0).masks.masks
    assert any(not torch.equal(start[n], alone_masks[n]) for n in start)  # RigL moved connections
    for name, mask in alone_masks.items():
        assert torch.equal(masks[name], mask), name
        assert torch.all(weights[name][~mask] == 0), name
    for name, value in alone_weights.items():
        torch.testing.assert_close(weights[name], value, rtol=1e-5, atol=1e-6)
