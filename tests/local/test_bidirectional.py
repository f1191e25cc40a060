"""Bidirectional learning: the shared-weight generator against the transposed weights, the
alternation of steps against a hand-run pair of optimizers, halfbiprop's cut-off, HAN."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from neuroplastic.errors import NeuroplasticError
from neuroplastic.local.bidirectional import HAN, Biprop, HalfBiprop, TransposedGenerator


def mlp() -> nn.Sequential:
    return nn.Sequential(nn.Flatten(), nn.Linear(6, 4), nn.Sigmoid(), nn.Linear(4, 3))


def test_generator_runs_the_transposed_weights_with_its_own_biases() -> None:
    torch.manual_seed(0)
    model = mlp()
    x = torch.rand(5, 2, 3)
    generator = TransposedGenerator(model, x)
    with torch.no_grad():
        for bias in generator.parameters():
            bias.normal_()
    code = F.one_hot(torch.tensor([0, 2]), 3).float()
    w1, w2 = model[1].weight, model[3].weight
    g_hidden_bias, g_input_bias = generator.biases[1], generator.biases[0]
    # the reference: GH1 = sigmoid(y W2^T' + G_B2); GX = GH1 W1^T' + G_B1 (TF stores W as in x out)
    want = (torch.sigmoid(code @ w2 + g_hidden_bias) @ w1 + g_input_bias).reshape(2, 2, 3)
    torch.testing.assert_close(generator(code), want)
    assert {id(p) for p in generator.parameters()} == {id(g_hidden_bias), id(g_input_bias)}
    assert generator.shared_weights()[0] is w1 and generator.shared_weights()[1] is w2


def test_convolutional_generator_is_the_adjoint_of_the_classifier_convolution() -> None:
    torch.manual_seed(1)
    model = nn.Sequential(nn.Conv2d(2, 3, 3, stride=2, padding=1, bias=False), nn.Flatten(),
                          nn.Linear(3 * 4 * 4, 5))
    x = torch.rand(4, 2, 7, 7)
    generator = TransposedGenerator(model, x)
    conv = model[0]
    h = torch.randn(4, 3, 4, 4)
    back = TransposedGenerator._conv_transpose(conv, h, (2, 7, 7))
    assert back.shape == x.shape
    # <conv(x), h> = <x, conv^T(h)>
    torch.testing.assert_close((conv(x) * h).sum(), (x * back).sum(), rtol=1e-5, atol=1e-5)
    assert generator(torch.randn(4, 5)).shape == x.shape


def test_biprop_alternates_a_classifier_step_and_a_generator_step_per_batch() -> None:
    torch.manual_seed(2)
    model = mlp()
    x, y = torch.rand(8, 2, 3), torch.randint(0, 3, (8,))
    twin = copy.deepcopy(model)
    Biprop().fit(model, [(x, y)], num_classes=3, epochs=1, lr=0.01)
    # by hand: Adam on cross-entropy, then Adam on the reconstruction of x from one-hot y
    generator = TransposedGenerator(twin, x)
    classifier_opt = torch.optim.Adam(twin.parameters(), lr=0.01)
    generator_opt = torch.optim.Adam([*generator.shared_weights(), *generator.parameters()], lr=0.01)
    F.cross_entropy(twin(x), y).backward()
    classifier_opt.step()
    twin.zero_grad()
    F.binary_cross_entropy_with_logits(generator(F.one_hot(y, 3).float()), x).backward()
    generator_opt.step()
    for mine, theirs in zip(model.parameters(), twin.parameters(), strict=True):
        torch.testing.assert_close(mine, theirs)
    # the generator step moved the shared weights beyond the classifier step alone
    assert not torch.equal(model[1].weight, _classifier_only(x, y)[1].weight)


def _classifier_only(x: torch.Tensor, y: torch.Tensor) -> nn.Sequential:
    torch.manual_seed(2)
    model = mlp()
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    F.cross_entropy(model(x), y).backward()
    opt.step()
    return model


def test_halfbiprop_stops_generator_steps_half_way() -> None:
    torch.manual_seed(3)
    data = [(torch.rand(4, 2, 3), torch.randint(0, 3, (4,))) for _ in range(5)]
    trainer = HalfBiprop()
    trainer.fit(mlp(), data, num_classes=3, epochs=2, lr=0.01)
    assert trainer.steps is not None and len(trainer.steps.losses) == 5  # 10 steps, generator in 5
    full = Biprop()
    full.fit(mlp(), data, num_classes=3, epochs=2, lr=0.01)
    assert full.steps is not None and len(full.steps.losses) == 10


def test_han_trains_the_shared_weights_against_a_discriminator() -> None:
    torch.manual_seed(4)
    data = [(torch.rand(16, 2, 3), torch.randint(0, 3, (16,))) for _ in range(4)]
    model = mlp()
    before = model[1].weight.detach().clone()
    trainer = HAN()
    trainer.fit(model, data, num_classes=3, epochs=1, lr=1e-3)
    assert trainer.steps is not None and trainer.steps.discriminator is not None
    assert len(trainer.steps.losses) == 4
    assert not torch.equal(before, model[1].weight)


@pytest.mark.parametrize(("model", "message"), [
    (nn.Linear(6, 3), "needs an nn.Sequential"),
    (nn.Sequential(nn.Flatten(), nn.BatchNorm1d(6), nn.Linear(6, 3)), "cannot run a BatchNorm1d backwards"),
    (nn.Sequential(nn.Flatten(), nn.ReLU()), "no Linear or Conv2d"),
])
def test_unsupported_classifiers_are_named(model: nn.Module, message: str) -> None:
    with pytest.raises(NeuroplasticError, match=message):
        TransposedGenerator(model, torch.rand(2, 2, 3))
