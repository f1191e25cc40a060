"""SparseMasks: parametrized masks stay exact through training; update, squash, state."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from neuroplastic import NeuroplasticError
from neuroplastic.sparse import SparseMasks


def make_model() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 3))


def half_masks(model: nn.Module) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    return {n: torch.rand(p.shape, generator=gen) > 0.5
            for n, p in model.named_parameters() if n.endswith("weight")}


@pytest.mark.parametrize("make_optimizer", [
    lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=0.1),
    lambda p: torch.optim.Adam(p, lr=0.1, weight_decay=0.1),
    lambda p: torch.optim.AdamW(p, lr=0.1, weight_decay=0.5),
], ids=["sgd-momentum-wd", "adam-wd", "adamw"])
def test_masked_weights_stay_exactly_zero_through_optimizer_steps(make_optimizer):
    model = make_model()
    masks = half_masks(model)
    sparse = SparseMasks()
    sparse.prepare(model, masks)
    optimizer = make_optimizer(model.parameters())
    x, y = torch.randn(16, 6), torch.randint(0, 3, (16,))
    for step in range(30):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
        if step == 10:  # change the masks mid-training: momentum buffers are stale now
            flipped = {n: ~m for n, m in masks.items()}
            sparse.update(flipped)
            masks = flipped
    for name, mask in masks.items():
        weight = dict(model.named_modules())[name.rpartition(".")[0]].weight
        assert torch.all(weight[~mask] == 0), name
        assert (weight[mask] != 0).float().mean() > 0.5, name  # regrown ones did train


def test_update_keeps_buffers_and_regrown_weights_start_at_zero():
    model = make_model()
    masks = half_masks(model)
    sparse = SparseMasks()
    sparse.prepare(model, masks)
    buffer = model[0].parametrizations.weight[0].mask
    with torch.no_grad():
        sparse.original("0.weight").add_(1.0)  # make every stored value non-zero
    grown = masks["0.weight"].clone()
    grown[~masks["0.weight"]] = True  # activate everything
    sparse.update({"0.weight": grown})
    assert model[0].parametrizations.weight[0].mask is buffer
    regrown = ~masks["0.weight"]
    assert torch.all(model[0].weight[regrown] == 0)
    assert torch.all(model[0].weight[masks["0.weight"]] != 0)


def test_squash_bakes_zeros_and_removes_parametrizations():
    model = make_model()
    masks = half_masks(model)
    sparse = SparseMasks()
    sparse.prepare(model, masks)
    x = torch.randn(4, 6)
    before = model(x)
    sparse.squash()
    assert not any(parametrize.is_parametrized(m) for m in model.modules())
    assert set(model.state_dict()) == {"0.weight", "0.bias", "2.weight", "2.bias"}
    assert torch.equal(model(x), before)
    assert torch.all(model[0].weight[~masks["0.weight"]] == 0)


def test_state_round_trip_and_bad_input():
    model = make_model()
    masks = half_masks(model)
    sparse = SparseMasks()
    sparse.prepare(model, masks)
    saved = sparse.state_dict()
    sparse.update({n: torch.ones_like(m) for n, m in masks.items()})
    sparse.load_state_dict(saved)
    assert all(torch.equal(sparse.masks[n], masks[n]) for n in masks)
    fresh, other = make_model(), SparseMasks()
    with pytest.raises(NeuroplasticError, match="no parameter"):
        other.prepare(fresh, {"9.weight": torch.ones(2, 2, dtype=torch.bool)})
    with pytest.raises(NeuroplasticError, match="shape"):
        other.prepare(fresh, {"0.weight": torch.ones(2, 2, dtype=torch.bool)})
    assert not any(parametrize.is_parametrized(m) for m in fresh.modules())


def test_dense_gradient_is_captured_at_inactive_positions():
    model = make_model()
    masks = half_masks(model)
    sparse = SparseMasks()
    sparse.prepare(model, masks)
    sparse.capture_dense_grads(True)
    x, y = torch.randn(8, 6), torch.randint(0, 3, (8,))
    nn.functional.cross_entropy(model(x), y).backward()
    dense = sparse.dense_grads()["2.weight"]
    # oracle: the same loss on a plain copy of the masked weights
    plain = make_model()
    with torch.no_grad():
        for name in ("0", "2"):
            getattr(plain, name).weight.copy_(getattr(model, name).weight)
            getattr(plain, name).bias.copy_(getattr(model, name).bias)
    nn.functional.cross_entropy(plain(x), y).backward()
    torch.testing.assert_close(dense, plain[2].weight.grad)
    assert (dense[~masks["2.weight"]] != 0).any()
    assert torch.all(sparse.original("2.weight").grad[~masks["2.weight"]] == 0)
