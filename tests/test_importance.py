"""Importance estimators against slow, independent reference loops."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from neuroplastic import NeuroplasticError, Targets
from neuroplastic.importance import Fisher, Gradient, LossFree, Magnitude, Taylor
from neuroplastic.importance.per_sample import covered_layers
from tests.conftest import tiny_batches


def slow_batch_grads(model, batches, objective):
    """Per batch, the gradient of objective(model(x), y) via .backward() on a fresh graph."""
    model.eval()
    out = []
    for x, y in batches:
        model.zero_grad()
        objective(model(x), y).backward()
        out.append({n: p.grad.detach().clone() for n, p in model.named_parameters()})
    model.zero_grad()
    return out


def test_batch_sq_fisher_is_mean_over_batches_of_squared_batch_mean_gradient(tiny_model):
    batches = tiny_batches()  # 22 samples in batches of 8: the short last batch counts fully
    grads = slow_batch_grads(tiny_model, batches, nn.functional.cross_entropy)
    expected = {n: sum(g[n] ** 2 for g in grads) / len(batches) for n in grads[0]}
    got = Fisher(mode="batch_sq").estimate(tiny_model, batches)
    assert got.keys() == expected.keys()
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=1e-6, atol=1e-10)


def test_per_sample_fisher_equals_batch_size_one_loop(tiny_model):
    batches = tiny_batches()
    singles = [(x[i:i + 1], y[i:i + 1]) for x, y in batches for i in range(len(x))]
    grads = slow_batch_grads(tiny_model, singles, nn.functional.cross_entropy)
    expected = {n: sum(g[n] ** 2 for g in grads) / len(singles) for n in grads[0]}
    got = Fisher(mode="per_sample").estimate(tiny_model, batches)
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=1e-5, atol=1e-9)
    # and it is a different quantity from the batch-mean form
    batch_sq = Fisher(mode="batch_sq").estimate(tiny_model, batches)
    assert not torch.allclose(batch_sq["fc.weight"], got["fc.weight"])


class Mixed(nn.Module):
    """Every kind of layer the per-sample fast path handles, and some it hands to vmap:
    strided, padded Conv2d; eval BatchNorm before an in-place ReLU; a Linear on a sequence
    (several rows per sample); LayerNorm; a free parameter; a tied weight; a layer called
    twice in one forward."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3, stride=2, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.relu = nn.ReLU(inplace=True)
        self.seq = nn.Linear(4, 6)
        self.norm = nn.LayerNorm(6)
        self.scale = nn.Parameter(torch.tensor(1.3))
        self.head = nn.Linear(6, 6, bias=False)
        self.out = nn.Linear(6, 6)
        self.out.weight = self.head.weight  # tied
        self.twice = nn.Linear(6, 6)
        self.bn_flat = nn.BatchNorm1d(6)  # on (B, 6): no dimension to sum over per sample
        self.norm_flat = nn.LayerNorm(6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.relu(self.bn(self.conv(x)))  # (B, 4, 3, 3)
        h = self.norm(self.seq(h.flatten(2).transpose(1, 2)))  # (B, 9, 6): a sequence
        h = self.norm_flat(self.bn_flat(h.mean(1)))
        h = self.twice(torch.tanh(self.twice(h)))  # one layer called twice
        return self.out(self.head(h * self.scale))


@pytest.mark.parametrize("conv_by_sample", [True, False], ids=["conv-kernel-per-sample", "conv-patches"])
def test_per_sample_fast_path_equals_the_batch_size_one_loop_on_every_layer_kind(monkeypatch, conv_by_sample):
    from neuroplastic.importance import per_sample

    # a CPU takes a convolution's weight-gradient kernel sample by sample, a GPU the batched
    # product over unfolded patches: both are checked here, on the CPU
    monkeypatch.setattr(per_sample, "CONV_BY_SAMPLE_ON", ("cpu",) if conv_by_sample else ())
    torch.manual_seed(3)
    model = Mixed()
    with torch.no_grad():  # running statistics that are not the identity
        model.bn.running_mean.uniform_(-0.5, 0.5)
        model.bn.running_var.uniform_(0.5, 2.0)
        model.bn_flat.running_mean.uniform_(-0.5, 0.5)
        model.bn_flat.running_var.uniform_(0.5, 2.0)
    x, y = torch.randn(10, 2, 6, 6), torch.randint(0, 6, (10,))
    batches = [(x[:7], y[:7]), (x[7:], y[7:])]
    singles = [(x[i:i + 1], y[i:i + 1]) for i in range(10)]
    grads = slow_batch_grads(model, singles, nn.functional.cross_entropy)
    expected = {n: sum(g[n] ** 2 for g in grads) / 10 for n in grads[0]}
    got = Fisher(mode="per_sample").estimate(model, batches)
    assert got.keys() == expected.keys()
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=1e-5, atol=1e-10)
    # the fast path took the layers it can; the free and the tied parameters went to vmap
    named = {n for n, _ in model.named_parameters()}
    assert set(covered_layers(model.eval(), named)) == {"conv", "bn", "seq", "norm", "twice", "bn_flat",
                                                        "norm_flat"}


class InPlaceInput(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(5, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.sub_(0.5))  # writes into its input


def test_per_sample_fast_path_takes_a_model_that_writes_into_its_input():
    torch.manual_seed(4)
    model = InPlaceInput()
    x, y = torch.rand(8, 5), torch.randint(0, 3, (8,))
    singles = [(x[i:i + 1].clone(), y[i:i + 1]) for i in range(8)]
    grads = slow_batch_grads(model, singles, nn.functional.cross_entropy)
    expected = {n: sum(g[n] ** 2 for g in grads) / 8 for n in grads[0]}
    got = Fisher(mode="per_sample").estimate(model, [(x.clone(), y)])
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=1e-5, atol=1e-10)


def test_loss_free_importance_is_mean_abs_gradient_of_squared_logit_norm(tiny_model):
    batches = tiny_batches()
    grads = slow_batch_grads(tiny_model, batches, lambda out, y: (out ** 2).sum(1).mean())
    expected = {n: sum(g[n].abs() for g in grads) / len(batches) for n in grads[0]}
    got = LossFree().estimate(tiny_model, batches)
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=1e-6, atol=1e-10)
    # labels are unused: shuffling them changes nothing
    relabelled = [(x, torch.flip(y, [0])) for x, y in batches]
    torch.testing.assert_close(LossFree().estimate(tiny_model, relabelled)["fc.weight"],
                               got["fc.weight"])


def test_gradient_and_taylor_estimators(tiny_model):
    batches = tiny_batches()
    grads = slow_batch_grads(tiny_model, batches, nn.functional.cross_entropy)
    params = dict(tiny_model.named_parameters())
    gradient = Gradient().estimate(tiny_model, batches)
    taylor = Taylor().estimate(tiny_model, batches)
    for name in params:
        torch.testing.assert_close(gradient[name], sum(g[name].abs() for g in grads) / len(batches))
        expected = sum((g[name] * params[name].detach()).abs() for g in grads) / len(batches)
        torch.testing.assert_close(taylor[name], expected)


def test_magnitude_needs_no_data(tiny_model):
    scores = Magnitude().estimate(tiny_model)
    torch.testing.assert_close(scores["fc.weight"], tiny_model.fc.weight.detach().abs())


def test_estimation_leaves_model_mode_grads_and_weights_alone(tiny_model):
    tiny_model.train()
    before = {k: v.clone() for k, v in tiny_model.state_dict().items()}
    Fisher().estimate(tiny_model, tiny_batches())
    assert tiny_model.training and tiny_model.bn.training
    assert all(p.grad is None for p in tiny_model.parameters())
    for key, value in tiny_model.state_dict().items():
        assert torch.equal(value, before[key]), key  # BN running stats untouched too


def test_targets_select_by_pattern_and_module_type(tiny_model):
    names = [n for n, _ in Targets(exclude=("*.bias",)).named_parameters(tiny_model)]
    assert names == ["conv.weight", "bn.weight", "fc.weight"]
    linear = Targets(module_types=(nn.Linear,)).named_parameters(tiny_model)
    assert [n for n, _ in linear] == ["fc.weight", "fc.bias"]
    scores = Fisher(targets=Targets(include=("fc.*",))).estimate(tiny_model, tiny_batches())
    assert set(scores) == {"fc.weight", "fc.bias"}
    with pytest.raises(NeuroplasticError, match="no parameter"):
        Targets(include=("nothing*",)).named_parameters(tiny_model)


def test_bad_estimator_input_is_a_clear_error(tiny_model):
    with pytest.raises(NeuroplasticError, match="mode"):
        Fisher(mode="diag")  # type: ignore[arg-type]
    with pytest.raises(NeuroplasticError, match="empty"):
        Fisher().estimate(tiny_model, [])
    with pytest.raises(NeuroplasticError, match="inputs but"):
        Fisher().estimate(tiny_model, [(torch.randn(4, 1, 4, 4), torch.zeros(3, dtype=torch.long))])


def test_batches_with_extra_elements_take_the_last_as_label():
    """(x, junk, y) batches, as a data set with a coarse label or an index yields them: the
    label is the last element (the SSD reference reads it so), the middle one is ignored."""
    from neuroplastic.batches import count_samples, labels_of

    torch.manual_seed(0)
    model = torch.nn.Linear(5, 3)
    x, y = torch.randn(12, 5), torch.randint(0, 3, (12,))
    junk = (y + 1) % 3  # wrong labels in the middle
    plain = [(x[:6], y[:6]), (x[6:], y[6:])]
    triple = [(x[:6], junk[:6], y[:6]), (x[6:], junk[6:], y[6:])]
    fisher = Fisher()
    expected, got = fisher.estimate(model, plain), fisher.estimate(model, triple)
    for name in expected:
        assert torch.equal(expected[name], got[name])
    assert torch.equal(labels_of(triple), y) and count_samples(triple) == 12


def test_exact_fisher_equals_a_slow_loop_over_samples_and_classes():
    """Fisher(mode="exact") = mean over samples of sum_c p(c|x) (grad log p(c|x))^2."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3))
    x = torch.randn(7, 4)
    data = [(x[:4], torch.zeros(4, dtype=torch.long)), (x[4:], torch.zeros(3, dtype=torch.long))]
    got = Fisher(mode="exact").estimate(model, data)
    expected = {n: torch.zeros_like(p) for n, p in model.named_parameters()}
    for i in range(len(x)):
        logp = torch.log_softmax(model(x[i:i + 1]), -1)[0]
        for c in range(3):
            model.zero_grad()
            grads = torch.autograd.grad(logp[c], list(model.parameters()), retain_graph=True)
            for (n, _), g in zip(model.named_parameters(), grads, strict=True):
                expected[n] += logp[c].exp().detach() * g ** 2
    for n in expected:
        torch.testing.assert_close(got[n], expected[n] / len(x), rtol=1e-4, atol=1e-7)
