"""SparseMasks (in place) and ParametrizedMasks: masked weights stay exactly zero through
training; update, squash, state."""

from __future__ import annotations

import gc

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize
from torch.optim.optimizer import _global_optimizer_post_hooks, _global_optimizer_pre_hooks

from neuroplastic import NeuroplasticError
from neuroplastic.sparse import ParametrizedMasks, SparseMasks
from neuroplastic.sparse.masks import remove_collected_hooks
from tests.clean import assert_clean

KINDS = pytest.mark.parametrize("kind", [SparseMasks, ParametrizedMasks],
                                ids=["in-place", "parametrize"])


def make_model() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 3))


def half_masks(model: nn.Module) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    return {n: torch.rand(p.shape, generator=gen) > 0.5
            for n, p in model.named_parameters() if n.endswith("weight")}


def attached(kind: type[SparseMasks]) -> tuple[nn.Sequential, dict[str, torch.Tensor], SparseMasks]:
    """The test model with ``half_masks`` attached by a fresh ``kind``."""
    model = make_model()
    masks = half_masks(model)
    sparse = kind()
    sparse.prepare(model, masks)
    return model, masks, sparse


def effective(model: nn.Module, name: str) -> torch.Tensor:
    """The weight the forward pass uses (a parametrization's output, or the parameter)."""
    module, _, attr = name.rpartition(".")
    return getattr(model.get_submodule(module), attr)


def global_hooks() -> int:
    gc.collect()  # masks earlier tests left unsquashed give up their hooks when collected
    remove_collected_hooks()
    return len(_global_optimizer_pre_hooks)


def assert_plain(model: nn.Module, global_hooks_before: int) -> None:
    assert_clean(model)
    assert len(_global_optimizer_pre_hooks) == global_hooks_before == 0
    assert len(_global_optimizer_post_hooks) == 0


OPTIMIZERS = {
    "sgd-momentum-wd": lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=0.1),
    "sgd-nesterov": lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, nesterov=True),
    "adam-wd": lambda p: torch.optim.Adam(p, lr=0.1, weight_decay=0.1),
    "adam-amsgrad": lambda p: torch.optim.Adam(p, lr=0.1, amsgrad=True),
    "adam-fused": lambda p: torch.optim.Adam(p, lr=0.1, fused=True),
    "adamw": lambda p: torch.optim.AdamW(p, lr=0.1, weight_decay=0.5),
    "rmsprop-centered": lambda p: torch.optim.RMSprop(p, lr=0.01, momentum=0.9, centered=True),
    "adagrad": lambda p: torch.optim.Adagrad(p, lr=0.1, weight_decay=0.1),
}


@KINDS
@pytest.mark.parametrize("make_optimizer", OPTIMIZERS.values(), ids=OPTIMIZERS.keys())
@pytest.mark.parametrize("optimizer_first", [False, True], ids=["after", "before-with-state"])
def test_masked_weights_stay_exactly_zero_through_optimizer_steps(kind, make_optimizer,
                                                                   optimizer_first):
    model = make_model()
    masks = half_masks(model)
    x, y = torch.randn(16, 6), torch.randint(0, 3, (16,))
    if optimizer_first:  # dense steps first: the optimizer's state is dense when masks arrive
        optimizer = make_optimizer(model.parameters())
        for _ in range(3):
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            optimizer.step()
    sparse = kind()
    hooks_before = global_hooks()
    sparse.prepare(model, masks)
    if not optimizer_first:
        optimizer = make_optimizer(model.parameters())
    for step in range(30):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
        if step in (10, 20):  # flip the masks: the dropped weights have momentum
            masks = {n: ~m for n, m in masks.items()}
            sparse.update(masks)
    for name, mask in masks.items():
        weight = effective(model, name)
        assert torch.all(weight[~mask] == 0), name
        assert (weight[mask] != 0).float().mean() > 0.5, name  # regrown ones did train
    sparse.squash()
    assert_plain(model, hooks_before)
    for name, mask in masks.items():
        assert torch.all(dict(model.named_parameters())[name][~mask] == 0), name


def test_masks_collected_during_an_optimizer_step_do_not_break_it():
    """A collection can run inside torch's loop over the global step hooks (any allocation
    in a hook); masks collected then must not remove their hook from that loop."""
    from torch.optim.optimizer import register_optimizer_step_post_hook

    def leave_garbage() -> None:  # masks and model in a cycle: only the collector frees them
        model = make_model()
        SparseMasks().prepare(model, half_masks(model))

    global_hooks()
    gc.disable()  # collected only by the gc.collect() inside the step's hook loop
    handle = register_optimizer_step_post_hook(lambda *_: gc.collect())
    try:
        leave_garbage()
        assert len(_global_optimizer_pre_hooks) == 1
        other = make_model()
        optimizer = torch.optim.SGD(other.parameters(), lr=0.1)
        other(torch.randn(2, 6)).sum().backward()
        optimizer.step()  # RuntimeError: OrderedDict mutated during iteration, before
    finally:
        handle.remove()
        gc.enable()
    assert global_hooks() == 0


@KINDS
def test_regrown_weight_starts_from_zero_weight_and_zero_momentum(kind):
    # oracle: one SGD-momentum step on a fresh entry (weight 0, buffer 0) gives w = -lr * g
    model, masks, sparse = attached(kind)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    x, y = torch.randn(16, 6), torch.randint(0, 3, (16,))
    old = masks["0.weight"]
    new = ~old  # regrow everything that was dropped, drop everything that was active
    for step in range(4):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        grad = sparse.weight("0.weight").grad.clone()
        optimizer.step()
        if step == 2:
            with torch.no_grad():
                sparse.weight("0.weight").add_(1.0)  # stored values regrowth must overwrite
            sparse.update({"0.weight": new})
    torch.testing.assert_close(effective(model, "0.weight")[new], -0.1 * grad[new])
    assert torch.all(effective(model, "0.weight")[old] == 0)
    assert torch.all(grad[old] == 0)


@pytest.mark.parametrize("amsgrad", [False, True])
def test_adam_on_a_regrown_weight_takes_a_fresh_first_step(amsgrad):
    """An inactive weight's second moment is held at a positive fill while it is inactive
    (torch's CPU sqrt is slow on zeros); a regrown weight must still start as a fresh Adam
    entry. Oracle: from zero moments, Adam's step t moves w by -lr m_hat / (sqrt(v_hat) + eps)
    with m_hat = (1 - b1) g / (1 - b1^t), v_hat = (1 - b2) g^2 / (1 - b2^t) (t is the
    tensor's step count, 5 here)."""
    model, masks, sparse = attached(SparseMasks)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1, amsgrad=amsgrad)
    x, y = torch.randn(16, 6), torch.randint(0, 3, (16,))
    old = masks["0.weight"]
    new = ~old
    for step in range(5):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        grad = sparse.weight("0.weight").grad.clone()
        optimizer.step()
        if step < 3:  # the inactive entries' second moments hold the fill, not zero
            state = optimizer.state[sparse.weight("0.weight")]
            assert torch.all(state["exp_avg_sq"][~old] > 0) and torch.all(state["exp_avg"][~old] == 0)
        if step == 3:
            sparse.update({"0.weight": new})
    g = grad[new].double()
    m_hat, v_hat = 0.1 * g / (1 - 0.9 ** 5), 0.001 * g * g / (1 - 0.999 ** 5)
    expected = (-0.1 * m_hat / (v_hat.sqrt() + 1e-8)).float()
    torch.testing.assert_close(effective(model, "0.weight")[new], expected)
    assert torch.all(effective(model, "0.weight")[old] == 0)


def test_squash_leaves_the_optimizer_state_the_masks_implied():
    """After squash, an inactive weight's Adam state is zero, as if nothing had been filled:
    training on densely from there treats it as a fresh entry."""
    model, masks, sparse = attached(SparseMasks)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
    x, y = torch.randn(16, 6), torch.randint(0, 3, (16,))
    for _ in range(3):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    weight = sparse.weight("0.weight")
    state = optimizer.state[weight]
    inactive = ~masks["0.weight"]
    assert torch.all(state["exp_avg_sq"][inactive] > 0)  # the fill, while masked
    active_before = state["exp_avg_sq"][~inactive].clone()
    sparse.squash()
    assert torch.all(state["exp_avg_sq"][inactive] == 0)
    assert torch.equal(state["exp_avg_sq"][~inactive], active_before)


def test_only_parametrized_masks_survive_writes_into_the_stored_weights():
    # an update rule outside torch.optim: noise added to every stored entry
    for kind, stays_zero in ((ParametrizedMasks, True), (SparseMasks, False)):
        model, masks, sparse = attached(kind)
        with torch.no_grad():
            sparse.weight("0.weight").add_(torch.randn(5, 6))
        inactive = effective(model, "0.weight")[~masks["0.weight"]]
        assert bool(torch.all(inactive == 0)) is stays_zero, kind.__name__
        sparse.squash()


@KINDS
def test_update_keeps_mask_tensors_and_regrown_weights_start_at_zero(kind):
    model, masks, sparse = attached(kind)
    keep = sparse._keep_of("0.weight")
    with torch.no_grad():
        sparse.weight("0.weight").add_(1.0)  # make every stored value non-zero
    grown = masks["0.weight"].clone()
    grown[~masks["0.weight"]] = True  # activate everything
    sparse.update({"0.weight": grown})
    assert sparse._keep_of("0.weight") is keep  # changed in place
    regrown = ~masks["0.weight"]
    assert torch.all(effective(model, "0.weight")[regrown] == 0)
    assert torch.all(effective(model, "0.weight")[masks["0.weight"]] != 0)


@KINDS
def test_squash_leaves_plain_weights_and_no_hook(kind):
    model = make_model()
    masks = half_masks(model)
    sparse = kind()
    hooks_before = global_hooks()
    sparse.prepare(model, masks)
    plain_keys = {"0.weight", "0.bias", "2.weight", "2.bias"}
    assert (set(model.state_dict()) == plain_keys) is (kind is SparseMasks)
    x = torch.randn(4, 6)
    before = model(x)
    sparse.squash()
    assert_plain(model, hooks_before)
    assert set(model.state_dict()) == plain_keys
    assert torch.equal(model(x), before)
    assert torch.all(model[0].weight[~masks["0.weight"]] == 0)


@KINDS
def test_state_round_trip_and_bad_input(kind):
    _, masks, sparse = attached(kind)
    saved = sparse.state_dict()
    sparse.update({n: torch.ones_like(m) for n, m in masks.items()})
    sparse.load_state_dict(saved)
    assert all(torch.equal(sparse.masks[n], masks[n]) for n in masks)
    fresh, other = make_model(), kind()
    before = {k: v.clone() for k, v in fresh.state_dict().items()}
    with pytest.raises(NeuroplasticError, match="no parameter"):
        other.prepare(fresh, {"9.weight": torch.ones(2, 2, dtype=torch.bool)})
    with pytest.raises(NeuroplasticError, match="shape"):
        other.prepare(fresh, {"0.weight": torch.ones(2, 2, dtype=torch.bool)})
    assert all(not p._backward_hooks for p in fresh.parameters())
    assert not any(parametrize.is_parametrized(m) for m in fresh.modules())
    assert all(torch.equal(v, before[k]) for k, v in fresh.state_dict().items())


@KINDS
def test_dense_gradient_is_captured_at_inactive_positions(kind):
    model, masks, sparse = attached(kind)
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
    assert torch.all(sparse.weight("2.weight").grad[~masks["2.weight"]] == 0)
    sparse.capture_dense_grads(False)
    assert sparse.dense_grads()["2.weight"] is None


def test_masks_nobody_squashed_leave_no_global_hook_once_collected():
    hooks_before = global_hooks()
    model = make_model()
    SparseMasks().prepare(model, half_masks(model))
    assert len(_global_optimizer_pre_hooks) == hooks_before + 1
    del model
    assert global_hooks() == hooks_before


@KINDS
def test_a_frozen_weight_can_be_masked(kind):
    model = make_model()
    model[0].weight.requires_grad_(False)
    masks = half_masks(model)
    sparse = kind()
    sparse.prepare(model, masks)
    assert torch.all(effective(model, "0.weight")[~masks["0.weight"]] == 0)
    nn.functional.cross_entropy(model(torch.randn(4, 6)), torch.tensor([0, 1, 2, 0])).backward()
    assert torch.all(sparse.weight("2.weight").grad[~masks["2.weight"]] == 0)
    sparse.squash()
