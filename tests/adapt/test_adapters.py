"""Norm, TENT and NHL: the TENT step by hand, lr 0 equals Norm, episodic and online
bit-identity, reset, and refusals."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from neuroplastic.adapt import NHL, Norm, Tent
from neuroplastic.adapt.base import batch_statistics, entropy
from neuroplastic.data import digits
from neuroplastic.data.corruptions import corrupt
from neuroplastic.errors import NeuroplasticError
from neuroplastic.local import SoftHebb
from neuroplastic.models import MLP
from neuroplastic.training import TrainConfig, fit


@pytest.fixture(scope="module")
def trained() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    data = digits()
    torch.manual_seed(0)
    model = MLP(64, 10, hidden=(64,), batch_norm=True)
    fit(model, data.train, TrainConfig(epochs=10))
    x, y = data.test.tensors
    return model.eval(), x, y


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_tent_step_is_adam_on_the_entropy_gradient_of_the_affine_parameters_by_hand() -> None:
    torch.manual_seed(1)
    model = nn.Sequential(nn.BatchNorm1d(4))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([1.0, 0.5, 2.0, -1.0]))
        model[0].bias.copy_(torch.tensor([0.1, -0.2, 0.0, 0.3]))
    x = torch.randn(6, 4)
    gamma, beta = model[0].weight.detach().clone(), model[0].bias.detach().clone()
    xhat = (x - x.mean(0)) / torch.sqrt(x.var(0, unbiased=False) + 1e-5)
    z = gamma * xhat + beta
    p = torch.softmax(z, -1)
    h = -(p * p.log()).sum(-1, keepdim=True)
    dz = -p * (p.log() + h) / len(x)  # d mean_b H_b / d z
    g_gamma, g_beta = (dz * xhat).sum(0), dz.sum(0)
    tent = Tent(lr=0.01)
    logits = tent.adapt(model, x)
    torch.testing.assert_close(logits, z)  # the logits of the forward the step was taken from
    # Adam's first step: lr * g / (|g| + eps)
    torch.testing.assert_close(model[0].weight.detach(), gamma - 0.01 * g_gamma / (g_gamma.abs() + 1e-8))
    torch.testing.assert_close(model[0].bias.detach(), beta - 0.01 * g_beta / (g_beta.abs() + 1e-8))


def test_tent_at_lr_zero_predicts_what_norm_predicts(trained) -> None:
    model, x, _ = trained
    shifted = corrupt(x[:128], "contrast", 5)
    tent, norm = Tent(lr=0.0), Norm()
    for batch in shifted.split(32):
        torch.testing.assert_close(tent.adapt(model, batch), norm.adapt(model, batch))
    tent.reset()


@pytest.mark.parametrize("make", [Norm, Tent, NHL], ids=["norm", "tent", "nhl"])
def test_episodic_adaptation_leaves_the_model_bit_identical_after_each_batch(trained, make) -> None:
    model, x, _ = trained
    before = snapshot(model)
    adapter = make(episodic=True)
    outputs = [adapter.adapt(model, batch) for batch in corrupt(x[:96], "fog", 4).split(32)]
    after = snapshot(model)
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(torch.isfinite(o).all() for o in outputs)


@pytest.mark.parametrize("make", [Tent, NHL], ids=["tent", "nhl"])
def test_online_adaptation_writes_only_what_it_adapts_and_reset_restores_it(trained, make) -> None:
    model, x, _ = trained
    before = snapshot(model)
    adapter = make()
    for batch in corrupt(x[:160], "contrast", 5).split(32):
        adapter.adapt(model, batch)
    after = snapshot(model)
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    allowed = {"net.2.weight", "net.2.bias"} if make is Tent else {"net.1.weight"}
    assert changed and changed <= allowed, changed
    adapter.reset()
    restored = snapshot(model)
    assert all(torch.equal(before[k], restored[k]) for k in before)


def test_norm_and_tent_recover_accuracy_on_low_contrast_digits(trained) -> None:
    model, x, y = trained
    shifted = corrupt(x, "contrast", 5)
    with torch.no_grad():
        source = float((model(shifted).argmax(-1) == y).float().mean())
    scores = {}
    for name, adapter in (("norm", Norm()), ("tent", Tent())):
        preds = torch.cat([adapter.adapt(model, b).argmax(-1) for b in shifted.split(64)])
        scores[name] = float((preds == y).float().mean())
        adapter.reset()
    assert scores["norm"] > source + 0.1 and scores["tent"] >= scores["norm"] - 0.01, (source, scores)


def test_tent_lowers_the_entropy_it_minimises(trained) -> None:
    model, x, _ = trained
    batch = corrupt(x[:64], "contrast", 5)
    tent = Tent(lr=1e-2)
    first = float(entropy(tent.adapt(model, batch)).mean())
    for _ in range(5):
        last = float(entropy(tent.adapt(model, batch)).mean())
    assert last < first
    tent.reset()


def test_entropy_margin_keeps_only_confident_samples(trained) -> None:
    model, x, _ = trained
    before = snapshot(model)
    tent = Tent(entropy_margin=1e-9)  # nothing is that confident: no update
    tent.adapt(model, x[:64])
    assert tent.selected == [0.0] and all(torch.equal(before[k], v) for k, v in snapshot(model).items())
    loose = Tent(entropy_margin=0.4)
    loose.adapt(model, corrupt(x[:64], "contrast", 5))
    assert 0 < loose.selected[0] < 1
    loose.reset()
    assert 0.4 * math.log(10) > 0  # EATA's E0 = 0.4 ln K


def test_nhl_moves_the_first_layer_by_the_hebbian_rule(trained) -> None:
    model, x, _ = trained
    layer = model.net[1]
    batch = x[:32]
    before = layer.weight.detach().clone()
    with torch.no_grad(), batch_statistics(model, keep_running=True):
        pre = model.net[0](batch)
        post = layer(pre)
    want = before + 0.01 * SoftHebb().delta(layer, pre, post)
    nhl = NHL(hebbian_lr=0.01)
    nhl.adapt(model, batch)
    torch.testing.assert_close(layer.weight.detach(), want)
    nhl.reset()
    assert torch.equal(layer.weight.detach(), before)


def test_refusals_name_what_is_missing(trained) -> None:
    plain = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    for adapter in (Norm(), Tent()):
        with pytest.raises(NeuroplasticError, match="has none"):
            adapter.adapt(plain, torch.rand(4, 1, 8, 8))
    model, x, _ = trained
    with pytest.raises(NeuroplasticError, match="a batch of 1 sample"):
        Norm().adapt(model, x[:1])
    fallback = Norm(small_batch="source")
    with torch.no_grad():
        torch.testing.assert_close(fallback.adapt(model, x[:1]), model.eval()(x[:1]))
    tent = Tent()
    tent.adapt(model, x[:8])
    with pytest.raises(NeuroplasticError, match="bound to another model"):
        tent.adapt(MLP(64, 10, hidden=(8,), batch_norm=True), x[:8])
    tent.reset()
    with pytest.raises(NeuroplasticError, match="affine=False"):
        Tent().adapt(nn.Sequential(nn.Flatten(), nn.BatchNorm1d(64, affine=False)), x[:8])


def test_tent_with_three_steps_returns_the_last_forwards_logits() -> None:
    torch.manual_seed(2)
    model = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4))
    x = torch.randn(8, 4)
    twin = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4))
    twin.load_state_dict(model.state_dict())
    logits = Tent(lr=0.05, steps=3).adapt(model, x)
    # by hand: two steps with another Tent, then the third forward is what the reference returns
    by_hand = Tent(lr=0.05, steps=2)
    first = by_hand.adapt(twin, x)
    with batch_statistics(twin, keep_running=True), torch.no_grad():
        third = twin(x)
    torch.testing.assert_close(logits, third)
    assert not torch.allclose(logits, first)


def test_norm_prior_mixes_source_and_batch_statistics_by_hand() -> None:
    torch.manual_seed(3)
    bn = nn.BatchNorm1d(3)
    with torch.no_grad():
        bn.running_mean.copy_(torch.tensor([1.0, -1.0, 0.5]))
        bn.running_var.copy_(torch.tensor([2.0, 0.5, 1.0]))
        bn.weight.copy_(torch.tensor([1.5, 1.0, -0.5]))
        bn.bias.copy_(torch.tensor([0.1, 0.2, 0.3]))
    model = nn.Sequential(bn)
    before = snapshot(model)
    x = torch.randn(16, 3) * 2 + 1
    prior = 0.75  # N / (N + n): N = 48 for n = 16
    mean = prior * before["0.running_mean"] + (1 - prior) * x.mean(0)
    var = prior * before["0.running_var"] + (1 - prior) * x.var(0, unbiased=True)
    expected = (x - mean) / torch.sqrt(var + bn.eps) * bn.weight.detach() + bn.bias.detach()
    torch.testing.assert_close(Norm(prior=prior).adapt(model, x), expected)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # buffers untouched
    batch_only = Norm().adapt(nn.Sequential(bn), x)
    torch.testing.assert_close(Norm(prior=0.0).adapt(nn.Sequential(bn), x), batch_only)
    with pytest.raises(NeuroplasticError, match="prior"):
        Norm(prior=1.5)


def test_run_corruptions_leaves_the_model_bit_identical_on_success_and_on_failure(trained,
                                                                                  monkeypatch) -> None:
    from neuroplastic.adapt.runner import run_corruptions

    model, x, y = trained
    before = snapshot(model)
    run_corruptions(model, x[:128], y[:128], [("contrast", 3)], method="tent",
                    params={"lr": 0.05})  # a large step: adaptation moves the affine parameters
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    real_step, calls = Tent.step, []

    def step_then_fail(self, model, x):  # two real TENT steps, then a failure mid-set
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("failed midway")
        return real_step(self, model, x)

    monkeypatch.setattr(Tent, "step", step_then_fail)
    with pytest.raises(RuntimeError, match="failed midway"):
        run_corruptions(model, x[:192], y[:192], [("contrast", 3)], method="tent", params={"lr": 0.05})
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
