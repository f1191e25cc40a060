"""Sparse methods against their published rules, checked step by step."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import nn

from neuroplastic import NeuroplasticError, registry
from neuroplastic.sparse import GMP, SET, SNIP, GraNet, MagnitudePruning, RigL
from neuroplastic.sparse.base import drop_and_grow
from neuroplastic.sparse.schedule import cosine_decay, cubic_sparsity
from tests.clean import assert_clean


def mlp() -> nn.Sequential:
    torch.manual_seed(0)
    # tanh: no dead units, so every regrown weight gets a gradient
    return nn.Sequential(nn.Linear(20, 32), nn.Tanh(), nn.Linear(32, 32), nn.Tanh(), nn.Linear(32, 4))


def batches(n: int = 8, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    return [(torch.randn(16, 20, generator=gen), torch.randint(0, 4, (16,), generator=gen))
            for _ in range(n)]


def train(model, sparsifier, steps: int, *, seed: int = 0, hook=None):
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    data = batches(steps, seed)
    for x, y in data:
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        if hook is not None:
            hook(sparsifier)
        sparsifier.step()


def total_density(sparsifier) -> float:
    masks = sparsifier.masks.masks
    return sum(int(m.sum()) for m in masks.values()) / sum(m.numel() for m in masks.values())


def test_drop_and_grow_hand_example():
    weight = torch.tensor([0.5, -0.1, 0.0, 2.0, 0.0, 0.0])
    mask = torch.tensor([True, True, False, True, False, False])
    grads = torch.tensor([9.0, 9.0, 1.0, 0.0, 5.0, 3.0])
    # drop the 2 smallest active |w| (-0.1, 0.5); grow the 2 best inactive by |grad|:
    # candidates 0 (9, just dropped), 1 (9, just dropped), 4 (5) -> 0 and 1 regrow
    assert drop_and_grow(weight, mask, grads, 2).tolist() == [True, True, False, True, False, False]
    grads[:2] = 0.0
    assert drop_and_grow(weight, mask, grads, 2).tolist() == [False, False, False, True, True, True]


def test_granet_prunes_on_the_cubic_schedule_and_reaches_the_target():
    model = mlp()
    total = 40
    sp = GraNet(model, sparsity=0.9, total_steps=total, update_frequency=5,
                initial_density=0.5, prune_window=(0.0, 0.7))
    seen = {}
    train(model, sp, total, hook=None)
    for step, density in zip(sp.log.steps, sp.log.densities, strict=True):
        seen[step] = density
    n = sum(math.prod(s) for s in sp.shapes.values())
    for step in sp.log.update_steps:
        if step <= sp.prune_end:
            expected = 1 - cubic_sparsity(step, initial=0.5, final=0.9, start=0, end=sp.prune_end)
            # the reference keeps |w| strictly above the k-th largest, k = int(n * density):
            # k - 1 weights (the regrowth that follows keeps each layer's count)
            assert seen[step] == (int(n * expected) - 1) / n
    assert sp.prune_end in sp.log.update_steps  # the final density is reached (to one weight)
    final = 1 - cubic_sparsity(sp.prune_end, initial=0.5, final=0.9, start=0, end=sp.prune_end)
    assert total_density(sp) == (int(n * final) - 1) / n
    assert sp.log.update_steps[-1] == 35  # regrowth continues after the window


def test_granet_regrows_by_dense_gradient():
    model = mlp()
    # the first update (step 3) lies before the pruning window: drop and regrow only
    sp = GraNet(model, sparsity=0.5, total_steps=100, update_frequency=3, initial_density=0.5,
                prune_window=(0.5, 0.7))
    record = {}

    def before_update(s):
        if s.is_update_step(s.step_count + 1):
            record["mask"] = s.masks.masks
            record["grad"] = {n: g.clone() for n, g in s.masks.dense_grads().items()}
            record["weight"] = {n: w.detach().clone() for n, w in s.weights().items()}

    train(model, sp, 3, hook=before_update)
    name = "2.weight"
    old, new = record["mask"][name], sp.masks.masks[name]
    rate = cosine_decay(3, initial=0.5, final=0.005, total=100)
    k = math.ceil(rate * int(old.sum()))
    assert int(new.sum()) == int(old.sum())  # no pruning needed at density 0.5 = initial
    expected = drop_and_grow(record["weight"][name], old, record["grad"][name].abs(), k)
    assert torch.equal(new, expected)
    assert int((new & ~old).sum()) > 0


def test_rigl_keeps_density_and_stops_at_75_percent():
    model = mlp()
    sp = RigL(model, sparsity=0.8, total_steps=40, update_frequency=4)
    counts0 = dict(sp.log.layer_counts[0])
    train(model, sp, 40)
    assert all(c == counts0 for c in sp.log.layer_counts)
    assert max(sp.log.update_steps) <= 30 and 28 in sp.log.update_steps
    assert sum(counts0.values()) == round(0.2 * sum(math.prod(s) for s in sp.shapes.values()))


def test_set_keeps_layer_counts_and_regrows_at_random():
    model = mlp()
    sp = SET(model, sparsity=0.8, total_steps=20, update_frequency=10, seed=3)
    before = sp.masks.masks
    counts0 = sp.log.layer_counts[0]
    train(model, sp, 20)
    assert sp.log.layer_counts[-1] == counts0
    assert any(not torch.equal(before[n], m) for n, m in sp.masks.masks.items())


def relu_mlp_with_dead_units() -> nn.Sequential:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 4))
    with torch.no_grad():
        model[0].bias[:32] = -100.0  # half the hidden units never fire: no gradient through them
    return model


@pytest.mark.parametrize("regrow_init", ["random", "zero"])
def test_set_regrown_weights_and_the_sparsity_counted_from_them(regrow_init):
    model = relu_mlp_with_dead_units()
    sp = SET(model, sparsity=0.8, total_steps=10, update_frequency=3, seed=0,
             regrow_init=regrow_init)
    before = sp.masks.masks["0.weight"]
    train(model, sp, 3)  # the first update is after step 3
    regrown = sp.masks.masks["0.weight"] & ~before
    values = model[0].weight[regrown].detach()
    # 30% are dropped; a just-dropped position may be drawn again
    assert 0.8 * 0.3 * int(before.sum()) < int(regrown.sum()) <= round(0.3 * int(before.sum()))
    if regrow_init == "zero":
        assert torch.all(values == 0)
    else:  # U(-1/sqrt(fan_in), 1/sqrt(fan_in)): non-zero, bounded, std bound/sqrt(3)
        bound = 1 / math.sqrt(20)
        assert torch.all(values != 0) and torch.all(values.abs() <= bound)
        assert float(values.std()) == pytest.approx(bound / math.sqrt(3), rel=0.2)
    train(model, sp, 7)
    exported = sp.export()
    weights = [p for n, p in exported.named_parameters() if n.endswith("weight")]
    zeros = sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights)
    mask_sparsity = 1 - sum(c for c in sp.log.layer_counts[-1].values()) / sum(
        math.prod(s) for s in sp.shapes.values())
    if regrow_init == "random":
        assert zeros == pytest.approx(mask_sparsity, abs=1e-9)
    else:  # weights regrown into the dead units never move from zero
        assert zeros > mask_sparsity + 0.01


def test_gmp_is_dense_first_then_prunes_monotonically():
    model = mlp()
    sp = GMP(model, sparsity=0.75, total_steps=20, update_frequency=2, prune_window=(0.0, 0.5))
    assert total_density(sp) == 1.0
    masks = [sp.masks.masks]
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for x, y in batches(20):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        sp.step()
        masks.append(sp.masks.masks)
    for earlier, later in itertools.pairwise(masks):
        assert all(torch.all(later[n] <= earlier[n]) for n in earlier)  # never regrows
    for name, shape in sp.shapes.items():
        assert int(sp.masks.masks[name].sum()) == pytest.approx(0.25 * math.prod(shape), abs=1)


def test_snip_keeps_the_global_top_k_saliency():
    model = mlp()
    x, y = batches(1)[0]
    loss = nn.functional.cross_entropy(model(x), y)
    weights = {n: p for n, p in model.named_parameters() if n.endswith("weight")}
    grads = torch.autograd.grad(loss, list(weights.values()))
    saliency = torch.cat([(g * w).abs().flatten() for g, w in zip(grads, weights.values(),
                                                                   strict=True)])
    k = round(0.1 * saliency.numel())
    threshold = saliency.sort(descending=True).values[k - 1]
    sp = SNIP(model, sparsity=0.9, data=[(x, y)])
    kept = torch.cat([sp.masks.masks[n].flatten() for n in weights])
    assert int(kept.sum()) == k
    assert torch.all(saliency[kept] >= threshold) and torch.all(saliency[~kept] <= threshold)


def test_global_magnitude_pruning_matches_a_sorted_threshold():
    model = mlp()
    weights = torch.cat([p.detach().abs().flatten() for n, p in model.named_parameters()
                         if n.endswith("weight")])
    k = round(0.3 * weights.numel())
    threshold = weights.sort(descending=True).values[k - 1]
    sp = MagnitudePruning(model, sparsity=0.7)
    kept = torch.cat([m.flatten() for m in sp.masks.masks.values()])
    assert int(kept.sum()) == k and torch.all(weights[kept] >= threshold)
    layer = MagnitudePruning(mlp(), sparsity=0.7, scope="layer")
    for _name, mask in layer.masks.masks.items():
        assert int(mask.sum()) == pytest.approx(0.3 * mask.numel(), abs=1)


SPARSE_METHODS = [e.name for e in registry.available("sparse") if not e.baseline]


def build(name: str, model: nn.Module, **kw):
    extra = {"data": batches(1)} if name == "snip" else {}
    return registry.create(name, kind="sparse", model=model, total_steps=10, **extra, **kw)


@pytest.mark.parametrize("name", SPARSE_METHODS)
def test_contract_bad_input_changes_nothing(name):
    model = mlp()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    for sparsity in (-0.1, 1.0, 1.5):
        with pytest.raises(NeuroplasticError, match="sparsity"):
            build(name, model, sparsity=sparsity)
    with pytest.raises(NeuroplasticError, match="no prunable layers"):
        build(name, nn.Sequential(nn.ReLU()), sparsity=0.5)
    with pytest.raises(NeuroplasticError, match="masking must be one of"):
        build(name, model, sparsity=0.5, masking="nope")
    assert_clean(model)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


@pytest.mark.parametrize("masking", ["in-place", "parametrize"])
@pytest.mark.parametrize("name", SPARSE_METHODS)
def test_contract_export_leaves_a_plain_model_at_the_target(name, masking):
    model = mlp()
    sp = build(name, model, sparsity=0.8, update_frequency=2, masking=masking)
    train(model, sp, 10)
    exported = sp.export()
    assert_clean(exported)
    weights = [p for n, p in exported.named_parameters() if n.endswith("weight")]
    zeros = sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights)
    assert zeros == pytest.approx(0.8, abs=0.005)


@pytest.mark.parametrize("name", SPARSE_METHODS)
def test_contract_dense_layers_stay_dense(name):
    model = mlp()
    sp = build(name, model, sparsity=0.5, update_frequency=2, dense_layers=("0.weight",))
    train(model, sp, 10)
    assert bool(sp.masks.masks["0.weight"].all())
    exported = sp.export()
    assert bool((exported[0].weight != 0).all())
    weights = [p for n, p in exported.named_parameters() if n.endswith("weight")]
    zeros = sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights)
    assert zeros == pytest.approx(0.5, abs=0.005)


def published_granet_step(weights, masks, grads, *, keep_fraction, death_rate):
    """One GraNet event as the reference code computes it (Liu et al. 2021, GraNet
    sparselearning/core.py: ``pruning`` then ``truncate_weights``), written here from its
    rules, independently of the library: a global magnitude prune that keeps |w| strictly
    above the k-th largest (k = int(total * keep_fraction)) and zeroes what it prunes; per
    layer, drop ceil(r * nonzeros) by magnitude (threshold at sorted index zeros +
    drop - 1, strict); regrow as many entries of the zero mask by sorted |gradient|; apply."""
    w = {n: weights[n] * masks[n] for n in weights}
    masks = {n: m.clone() for n, m in masks.items()}
    if keep_fraction is not None:
        scores = torch.cat([w[n].abs().flatten() for n in w])
        k = int(len(scores) * keep_fraction)
        acceptable = torch.topk(scores, k, sorted=True).values[-1]
        masks = {n: (w[n].abs() > acceptable) for n in w}
        w = {n: w[n] * masks[n] for n in w}
    new_masks, new_weights = {}, {}
    for n in w:
        nonzeros = int(masks[n].sum())
        zeros = masks[n].numel() - nonzeros
        remove = math.ceil(death_rate * nonzeros)
        if remove == 0:
            kept = w[n] != 0
        else:
            ordered = torch.sort(w[n].abs().flatten()).values
            kept = w[n].abs() > ordered[math.ceil(zeros + remove) - 1]
        regrow = nonzeros - int(kept.sum())
        score = (grads[n] * (~kept).float()).abs().flatten()
        order = torch.sort(score, descending=True).indices
        grown = kept.clone().flatten()
        grown[order[:regrow]] = True
        new_masks[n] = grown.reshape(kept.shape)
        new_weights[n] = w[n] * new_masks[n]
    return new_masks, new_weights


def test_granet_replays_the_published_step_on_every_event():
    """On the same weights, masks and dense gradients, every GraNet event (inside the pruning
    window and after it) gives the published step's masks and weights exactly; weights pruned
    by the global prune and regrown at once restart at zero."""
    model = mlp()
    total = 60
    sp = GraNet(model, sparsity=0.9, total_steps=total, update_frequency=4, initial_density=0.5,
                prune_window=(0.0, 0.6))
    pending = {}
    events = []

    def before(s):
        step = s.step_count + 1
        if s.is_update_step(step):
            masks = {n: m.clone() for n, m in s.masks.masks.items()}
            weights = {n: w.detach().clone() for n, w in s.weights().items()}
            grads = {n: g.clone() for n, g in s.masks.dense_grads().items()}
            keep = s.target_density(step) if s.prune_start < step <= s.prune_end else None
            rate = cosine_decay(step, initial=0.5, final=0.005, total=total)
            new_masks, new_weights = published_granet_step(weights, masks, grads, keep_fraction=keep,
                                                           death_rate=rate)
            pending["expected"] = (new_masks, new_weights, keep)

    def check(s, expected):
        masks, weights, keep = expected
        for n in masks:
            assert torch.equal(s.masks.masks[n], masks[n]), n
            assert torch.equal(s.weights()[n].detach(), weights[n]), n
        return keep

    original_step = sp.step  # compare right after each update

    def step_and_check():
        original_step()
        if pending:
            events.append(check(sp, pending.pop("expected")))

    sp.step = step_and_check
    train(model, sp, total, hook=before)
    assert len(events) == len(sp.log.update_steps) >= 10
    assert any(k is not None for k in events) and any(k is None for k in events)
