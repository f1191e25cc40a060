"""SSD against an independent slow implementation of the published algorithm, and its pieces."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from neuroplastic import NeuroplasticError, select
from neuroplastic.evaluate import accuracy
from neuroplastic.forget import LFSSD, SSD
from neuroplastic.importance import Fisher, ImportanceCache
from neuroplastic.intervene import dampen_
from tests.conftest import tiny_batches


def reference_ssd(model: nn.Module, forget, full, *, alpha: float, lam: float) -> None:
    """SSD as written in the paper (Foster et al. 2024, Algorithm 1), entry by entry:
    importances from loss.backward() per batch, then a Python loop over every scalar."""
    def importance(batches):
        model.eval()
        total = {n: torch.zeros_like(p) for n, p in model.named_parameters()}
        for x, y in batches:
            model.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            for n, p in model.named_parameters():
                total[n] += p.grad.detach() ** 2
        return {n: t / len(batches) for n, t in total.items()}

    i_full, i_forget = importance(list(full)), importance(list(forget))
    with torch.no_grad():
        for name, param in model.named_parameters():
            flat = param.view(-1)
            f_flat, d_flat = i_forget[name].view(-1), i_full[name].view(-1)
            for k in range(flat.numel()):
                f, d = float(f_flat[k]), float(d_flat[k])
                if f > alpha * d:
                    flat[k] *= min(lam * d / f, 1.0)


def published_full_data(retain, forget, *, batch_size: int) -> list:
    """D as the SSD reference builds it when only retain and forget are given:
    ``DataLoader(ConcatDataset(retain, forget), batch_size, shuffle=False)``."""
    from torch.utils.data import ConcatDataset, DataLoader, TensorDataset

    def dataset(batches):
        return TensorDataset(torch.cat([x for x, _ in batches]), torch.cat([y for _, y in batches]))

    return list(DataLoader(ConcatDataset([dataset(retain), dataset(forget)]), batch_size=batch_size,
                           shuffle=False))


@pytest.mark.parametrize(("alpha", "lam"), [(10.0, 1.0), (2.0, 0.5), (1.0, 3.0)])
def test_ssd_equals_slow_reference(tiny_model, alpha, lam):
    # forget samples unlike the retain ones (scaled inputs, one label) and few (I_D includes
    # them, so I_f > alpha * I_D needs more than alpha full-data batches per forget batch)
    forget = [(3 * x, torch.zeros_like(y)) for x, y in tiny_batches(n=8, seed=1)]
    retain = tiny_batches(n=300, seed=2)
    original = copy.deepcopy(tiny_model.state_dict())
    full = published_full_data(retain, forget, batch_size=8)
    expected = copy.deepcopy(tiny_model)
    reference_ssd(expected, forget, full, alpha=alpha, lam=lam)
    result = SSD(alpha=alpha, lam=lam, cache=ImportanceCache()).unlearn(tiny_model, forget, retain)
    for (name, got), (_, want) in zip(tiny_model.named_parameters(),
                                      expected.named_parameters(), strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-6, msg=lambda m, n=name: f"{n}: {m}")
    # the comparison is not vacuous: the reference changed weights, and so did SSD
    assert result.metrics["selected_fraction"] > 0
    assert any(not torch.equal(original[n], p.detach()) for n, p in expected.named_parameters())
    for key, value in expected.state_dict().items():  # BN running stats untouched
        if "running" in key:
            assert torch.equal(tiny_model.state_dict()[key], value)


def test_ratio_selection_is_strict_and_dampening_is_hand_computed():
    i_f = {"w": torch.tensor([10.0, 5.0, 0.0, 8.0])}
    i_d = {"w": torch.tensor([1.0, 0.5, 0.0, 0.1])}
    mask = select.ratio(i_f, i_d, alpha=10.0)
    # 10 > 10*1 is False (strict); 5 > 5 False; 0 > 0 False; 8 > 1 True
    assert mask["w"].tolist() == [False, False, False, True]
    model = nn.Linear(4, 1, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, 2.0, 3.0, 4.0]]))
    mask = select.ratio(i_f, i_d, alpha=0.5)  # selects 10>0.5, 5>0.25, 8>0.05
    n = dampen_(model, {"weight": i_f["w"][None]}, {"weight": i_d["w"][None]},
                mask={"weight": mask["w"][None]}, lam=20.0)
    # beta = min(20 * I_D / I_f, 1): [min(2,1), min(2,1), -, 0.25]
    assert n == 3
    assert model.weight.tolist() == [[1.0, 2.0, 3.0, 1.0]]


def test_dampen_rejects_bad_input_without_touching_weights(tiny_model):
    before = copy.deepcopy(tiny_model.state_dict())
    scores = Fisher().estimate(tiny_model, tiny_batches())
    mask = select.ratio(scores, scores, alpha=0.5)
    bad = {k: v.clone() for k, v in scores.items()}
    bad["fc.weight"][0, 0] = float("nan")
    with pytest.raises(NeuroplasticError, match="NaN"):
        dampen_(tiny_model, bad, scores, mask=mask)
    with pytest.raises(NeuroplasticError, match="lambda"):
        dampen_(tiny_model, scores, scores, mask=mask, lam=0.0)
    wrong = dict(scores)
    wrong["fc.weight"] = torch.ones(2, 2)
    with pytest.raises(NeuroplasticError, match="shapes differ"):
        dampen_(tiny_model, wrong, scores, mask=mask)
    for key, value in tiny_model.state_dict().items():
        assert torch.equal(value, before[key])


def test_scores_checked_once_are_checked_again_after_an_in_place_change(tiny_model):
    """The finiteness check remembers tensors it passed (a search selects and dampens many
    times with the same scores); a NaN written into such a tensor afterwards must still be
    caught, by select.ratio and by dampen_, before any weight changes."""
    before = copy.deepcopy(tiny_model.state_dict())
    scores = Fisher().estimate(tiny_model, tiny_batches())
    forget = {k: v.clone() for k, v in scores.items()}
    mask = select.ratio(forget, scores, alpha=0.5)  # checked and remembered
    forget["fc.weight"][0, 0] = float("nan")
    with pytest.raises(NeuroplasticError, match="NaN"):
        select.ratio(forget, scores, alpha=0.5)
    with pytest.raises(NeuroplasticError, match="NaN"):
        dampen_(tiny_model, forget, scores, mask=mask)
    for key, value in tiny_model.state_dict().items():
        assert torch.equal(value, before[key])


def test_alpha_must_be_positive():
    for alpha in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(NeuroplasticError, match="alpha"):
            SSD(alpha=alpha)


def test_ssd_forgets_a_class_of_a_trained_model(trained_mlp, class3):
    model = copy.deepcopy(trained_mlp)
    before = accuracy(model, class3["forget"])
    SSD(alpha=10.0, cache=ImportanceCache()).unlearn(model, class3["forget"], class3["retain"],
                                                     full=class3["full"])
    assert before > 0.95
    assert accuracy(model, class3["forget"]) < 0.2


def test_lfssd_uses_no_labels_and_forgets(trained_mlp, class3):
    model = copy.deepcopy(trained_mlp)
    LFSSD(alpha=10.0, cache=ImportanceCache()).unlearn(model, class3["forget"], class3["retain"],
                                                       full=class3["full"])
    assert accuracy(model, class3["forget"]) < accuracy(trained_mlp, class3["forget"]) - 0.3


def test_ssd_needs_retain_or_full(tiny_model):
    before = copy.deepcopy(tiny_model.state_dict())
    with pytest.raises(NeuroplasticError, match="retain data or the full"):
        SSD().unlearn(tiny_model, tiny_batches())
    assert all(torch.equal(v, before[k]) for k, v in tiny_model.state_dict().items())


def test_ssd_without_full_uses_the_published_d_and_selects_on_digits(trained_mlp, class3):
    """With only forget and (shuffled) retain loaders, D is retain then forget in data set
    order, re-batched by 64: the same importance as the reference's ConcatDataset loader;
    at the published alpha = 10 it selects parameters and forgets class 3 (the old D,
    which reused the forget batches, selected nothing at alpha = 10)."""
    from neuroplastic.batches import Rebatched

    scenario = class3["scenario"]
    d = Rebatched(class3["retain"], class3["forget"], batch_size=64)
    reference = published_full_data(
        [(scenario.retain.tensors[0], scenario.retain.tensors[1])],
        [(scenario.forget.tensors[0], scenario.forget.tensors[1])], batch_size=64)
    got = list(d)
    assert len(got) == len(reference)
    for (x, y), (rx, ry) in zip(got, reference, strict=True):
        assert torch.equal(x, rx) and torch.equal(y, ry)
    model = copy.deepcopy(trained_mlp)
    result = SSD(alpha=10.0, cache=ImportanceCache()).unlearn(model, class3["forget"], class3["retain"])
    assert result.metrics["selected_fraction"] > 0
    assert accuracy(model, class3["forget"]) < accuracy(trained_mlp, class3["forget"])
