"""Concept-shift streams, the three learning-rate rules, adaptive gain control."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch.utils.data import TensorDataset

from neuroplastic.adapt.homeostasis import ConceptShiftStream, GainControl, shift_mlp, train_shift
from neuroplastic.data import digits
from neuroplastic.errors import NeuroplasticError


def toy(n: int = 200, classes: int = 4) -> TensorDataset:
    g = torch.Generator().manual_seed(0)
    y = torch.arange(n) % classes
    return TensorDataset(torch.randn(n, 6, generator=g) + y[:, None].float(), y)


def test_stream_swaps_two_labels_evenly_and_relabels_everything_after() -> None:
    data = toy()
    stream = ConceptShiftStream(data, swaps=4, epochs=2, batch_size=10, seed=1)
    maps, seen = [], []
    for x, y in stream:
        maps.append(stream.mapping.clone())  # the map this batch was labelled with
        seen.append((x, y))
    assert len(seen) == 40 and len(stream.swap_steps) == 8
    assert stream.swap_steps[:4] == [5, 10, 15, 20]
    assert sorted(stream.mapping.tolist()) == [0, 1, 2, 3]  # always a permutation
    x_of = {tuple(row.tolist()): int(label) for row, label in zip(*data.tensors, strict=True)}
    assert torch.equal(maps[0], torch.arange(4)) and not torch.equal(maps[5], maps[4])
    for step, (x, y) in enumerate(seen):
        original = torch.tensor([x_of[tuple(row.tolist())] for row in x])
        assert torch.equal(y, maps[step][original])
    with pytest.raises(NeuroplasticError, match="exceeds"):
        ConceptShiftStream(data, swaps=100, epochs=1)


def test_constant_rate_never_moves_and_random_moves_by_tenths_with_the_true_label() -> None:
    data = toy()
    for method in ("constant", "random-lr", "homeostatic"):
        torch.manual_seed(0)
        stream = ConceptShiftStream(data, swaps=2, epochs=2, batch_size=10, seed=0)
        firsts: list[int] = []
        batches = list(stream)
        for _, y in batches:
            firsts.append(int(y[0]))
        replay = ConceptShiftStream(data, swaps=2, epochs=2, batch_size=10, seed=0)
        result = train_shift(shift_mlp(6, 4), replay, method=method, lr=0.1, memory=20)
        rates = [0.1, *result.lr]
        moves = [b - a for a, b in itertools.pairwise(rates)]
        if method == "constant":
            assert set(result.lr) == {0.1}
            continue
        assert any(m != 0 for m in moves)
        for step, move in enumerate(moves):
            if move == 0 or rates[step + 1] == 1e-8:
                continue
            assert abs(abs(move) - 0.01) < 1e-9  # eta0 / 10
            upper = firsts[step] >= 2  # the first sample's true label: excitatory half
            assert (move > 0) == upper, (method, step, move, firsts[step])
        assert step >= 2  # moves start once 20 samples are remembered


def test_shift_run_reports_online_and_test_accuracy() -> None:
    data = digits()
    stream = ConceptShiftStream(data.train, swaps=2, epochs=2, batch_size=10, seed=0)
    torch.manual_seed(0)
    result = train_shift(shift_mlp(64, 10), stream, method="homeostatic", lr=0.05, test=data.test)
    metrics = result.metrics()
    assert metrics["swaps"] == 4 and len(result.online_acc) == len(stream)
    assert 0 <= metrics["recovery_acc"] <= 1 and metrics["final_test_acc"] > 0.3


def test_gain_control_whitens_a_correlated_context() -> None:
    g = torch.Generator().manual_seed(0)
    mixing = torch.tensor([[1.0, 0.0, 0.0], [0.8, 0.6, 0.0], [0.3, -0.5, 0.9]]) * 1.5
    gains = GainControl(3, eta=0.05, seed=0)
    for _ in range(8000):
        gains.update_(torch.randn(512, 3, generator=g) @ mixing.T)
    x = torch.randn(20000, 3, generator=g) @ mixing.T
    before = torch.cov(x.T)
    after = torch.cov(gains(x).T)
    assert (before - torch.eye(3)).abs().max() > 0.5
    torch.testing.assert_close(after, torch.eye(3), atol=0.06, rtol=0)


def test_rate_checks_fall_where_lrh_and_lrr_place_them() -> None:
    """lrh.py checks at the first sample i of a batch when i > 20 in this epoch (batches
    3, 4, ... of 10); lrr.py at every batch but an epoch's first."""
    data = toy(n=120)
    for method, first_allowed in (("homeostatic", 3), ("random-lr", 1)):
        moved_at: set[int] = set()
        for seed in range(4):
            torch.manual_seed(seed)
            stream = ConceptShiftStream(data, swaps=0, epochs=3, batch_size=10, seed=seed)
            result = train_shift(shift_mlp(6, 4), stream, method=method, lr=0.1, seed=seed)
            rates = [0.1, *result.lr]
            moved_at |= {step % stream.per_epoch for step in range(len(result.lr))
                         if rates[step + 1] != rates[step]}
        assert moved_at and min(moved_at) == first_allowed, (method, sorted(moved_at))
