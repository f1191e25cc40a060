"""Evaluation: entropy, membership inference attacks, report."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from neuroplastic.evaluate import Outputs, entropy_mia, loss_threshold_mia
from neuroplastic.evaluate.mia import best_threshold
from neuroplastic.evaluate.report import Report, grouped_bars
from neuroplastic.io import to_json


def outputs(logits: list[list[float]], labels: list[int]) -> Outputs:
    return Outputs(torch.tensor(logits), torch.tensor(labels))


def test_entropy_is_hand_computed_with_zero_log_zero():
    out = outputs([[0.0, 0.0], [math.log(3.0), 0.0], [1000.0, 0.0]], [0, 0, 0])
    p = 0.75
    expected = [math.log(2), -(p * math.log(p) + (1 - p) * math.log(1 - p)), 0.0]
    assert out.entropies().tolist() == pytest.approx(expected, abs=1e-6)


def test_accuracy_and_per_class_accuracy():
    out = outputs([[2.0, 0.0], [0.0, 2.0], [2.0, 0.0]], [0, 0, 1])
    assert out.accuracy == pytest.approx(1 / 3)
    assert out.per_class_accuracy(3)[:2] == [0.5, 0.0] and math.isnan(out.per_class_accuracy(3)[2])


def test_entropy_mia_flags_confident_forget_samples_as_members():
    gen = torch.Generator().manual_seed(0)
    confident = torch.randn(200, 3, generator=gen) + torch.tensor([8.0, 0.0, 0.0])
    unsure = torch.randn(200, 3, generator=gen) * 0.1
    labels = torch.zeros(200, dtype=torch.long)
    members, nonmembers = Outputs(confident, labels), Outputs(unsure, labels)
    assert entropy_mia(members, nonmembers, Outputs(confident[:50], labels[:50])) > 0.95
    assert entropy_mia(members, nonmembers, Outputs(unsure[:50], labels[:50])) < 0.05


def test_best_threshold_matches_brute_force():
    rng = np.random.default_rng(0)
    member, nonmember = rng.exponential(0.5, 40), rng.exponential(1.5, 30)
    member[:5] = nonmember[:5]  # ties across the groups

    def balanced(t: float) -> float:
        return ((member <= t).mean() + (nonmember > t).mean()) / 2

    candidates = list(itertools.chain(member, nonmember))
    best = max(balanced(t) for t in candidates)
    got = best_threshold(torch.tensor(member), torch.tensor(nonmember))
    assert balanced(got) == pytest.approx(best)


def test_loss_threshold_mia_on_separable_losses():
    retain = outputs([[5.0, 0.0]] * 10, [0] * 10)  # low loss
    test = outputs([[0.0, 5.0]] * 10, [0] * 10)  # high loss
    assert loss_threshold_mia(retain, test, outputs([[5.0, 0.0]] * 4, [0] * 4)) == 1.0
    assert loss_threshold_mia(retain, test, outputs([[0.0, 5.0]] * 4, [0] * 4)) == 0.0


def test_report_is_self_contained_html(tmp_path):
    report = Report("t").table("numbers", ["a", "b"], [["x", 0.5], ["y", float("nan")]])
    report.figure("bars", grouped_bars({"m": [0.1, 0.9]}, ["0", "1"], ylabel="acc"))
    report.write(tmp_path / "r.html")
    text = (tmp_path / "r.html").read_text()
    assert "data:image/png;base64," in text and "<td>0.5</td>" in text
    assert "http" not in text.replace("http-equiv", "")


def test_json_is_strict():
    assert to_json({"a": float("nan"), "b": [float("inf"), 1.0]}) == (
        '{\n  "a": null,\n  "b": [\n    null,\n    1.0\n  ]\n}')


def test_entropy_attack_power_sees_a_gap_and_no_gap():
    from neuroplastic.evaluate.mia import entropy_attack_auc
    from neuroplastic.evaluate.outputs import Outputs

    gen = torch.Generator().manual_seed(0)

    def outputs(scale: float, n: int = 200) -> Outputs:
        return Outputs(torch.randn(n, 5, generator=gen) * scale, torch.zeros(n, dtype=torch.long))

    confident, unsure = outputs(8.0), outputs(0.5)  # low vs high softmax entropy
    assert entropy_attack_auc(confident, unsure) > 0.95
    assert abs(entropy_attack_auc(outputs(2.0), outputs(2.0)) - 0.5) < 0.1
