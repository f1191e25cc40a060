"""Robustness evaluation: FGSM by hand on a linear model, PGD's projection and strength,
noise, and the gradient-masking checks."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from neuroplastic.data import loader
from neuroplastic.evaluate.robustness import (
    Robustness,
    fgsm,
    fgsm_training_loss,
    masking_warnings,
    noise_accuracy,
    pgd,
    robustness,
)


def test_fgsm_is_the_signed_input_gradient_by_hand():
    model = nn.Linear(3, 2)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, -2.0, 0.5], [0.0, 1.0, -1.0]]))
        model.bias.zero_()
    x, y = torch.tensor([[0.5, 0.5, 0.5]]), torch.tensor([0])
    p = torch.softmax(model(x), -1).detach()
    grad = (p - torch.tensor([[1.0, 0.0]])) @ model.weight.detach()  # d CE / dx
    expected = (x + 0.1 * grad.sign()).clamp(0, 1)
    assert torch.allclose(fgsm(model, x, y, eps=0.1), expected)


def test_fgsm_training_loss_mixes_clean_and_adversarial_cross_entropy_by_hand():
    model = nn.Linear(3, 2)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, -2.0, 0.5], [0.0, 1.0, -1.0]]))
        model.bias.zero_()
    x, y = torch.tensor([[0.5, 0.5, 0.5], [0.2, 0.9, 0.1]]), torch.tensor([0, 1])
    p = torch.softmax(model(x), -1).detach()
    grad = (p - nn.functional.one_hot(y, 2)) @ model.weight.detach()  # per-sample d CE / dx
    adv = (x + 0.2 * grad.sign()).clamp(0, 1)
    ce = nn.functional.cross_entropy
    want = 0.3 * ce(model(x), y) + 0.7 * ce(model(adv), y)
    torch.testing.assert_close(fgsm_training_loss(eps=0.2, mix=0.3)(model, x, y), want)
    assert fgsm_training_loss(eps=0.2, mix=0.3)(model, x, y).requires_grad


def test_pgd_stays_in_the_ball_and_the_bounds_and_is_at_least_as_strong(trained_mlp, digits_data):
    x, y = digits_data.test.tensors[0][:128], digits_data.test.tensors[1][:128]
    adv = pgd(trained_mlp, x, y, eps=0.1, steps=10, restarts=2)
    assert float((adv - x).abs().max()) <= 0.1 + 1e-6
    assert float(adv.min()) >= 0 and float(adv.max()) <= 1
    with torch.no_grad():
        acc_pgd = float((trained_mlp(adv).argmax(-1) == y).float().mean())
        acc_fgsm = float((trained_mlp(fgsm(trained_mlp, x, y, eps=0.1)).argmax(-1) == y).float().mean())
        clean = float((trained_mlp(x).argmax(-1) == y).float().mean())
    assert acc_pgd <= acc_fgsm <= clean


def test_robustness_curve_falls_to_zero_and_raises_no_masking_warning(trained_mlp, digits_data):
    data = loader(digits_data.test, batch_size=128)
    result = robustness(trained_mlp, data, epsilons=(0.05, 0.3), sigmas=(0.0, 0.3), pgd_steps=10)
    assert result.noise[0.0] == pytest.approx(result.clean)
    assert result.pgd[0.3] < 0.05  # a large budget breaks an undefended model
    assert result.noise[0.3] < result.clean
    assert masking_warnings(result) == []
    keys = result.metrics()
    assert keys["robust.fgsm.0.05"] == result.fgsm[0.05] and "robust.pgd.0.3" in keys


def test_robustness_reports_progress_in_passes_over_the_data():
    """Each measurement counts its passes over the data (a PGD one steps x restarts), so the
    bar ends at the total and moves most where the work is."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    data = [(torch.rand(20, 4), torch.randint(0, 3, (20,)))]
    calls: list[tuple[int, int | None]] = []
    robustness(model, data, epsilons=(0.1, 0.2), sigmas=(0.3,), pgd_steps=3, pgd_restarts=2,
               progress=lambda done, total: calls.append((done, total)))
    total = 1 + 2 * (1 + 3 * 2) + 2 * 1
    assert calls == [(1, total), (2, total), (8, total), (9, total), (15, total), (17, total)]


def test_noise_is_seeded():
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    data = [(torch.rand(20, 4), torch.randint(0, 3, (20,)))]
    assert noise_accuracy(model, data, sigma=0.5, seed=1) == noise_accuracy(model, data, sigma=0.5, seed=1)


def test_masking_warnings_name_the_symptoms():
    masked = Robustness(clean=0.9, fgsm={0.1: 0.2, 0.3: 0.1}, pgd={0.1: 0.5, 0.3: 0.4})
    notes = masking_warnings(masked)
    assert any("PGD scores above FGSM at eps 0.1" in n for n in notes)
    assert any("still 0.400" in n for n in notes)
