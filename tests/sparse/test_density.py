"""Layer densities (ERK, uniform) and schedules against hand-computed values."""

from __future__ import annotations

import math

import pytest

from neuroplastic import NeuroplasticError
from neuroplastic.sparse import erk_counts, uniform_counts
from neuroplastic.sparse.schedule import cosine_decay, cubic_sparsity

SHAPES = {"conv1": (16, 1, 3, 3), "conv2": (32, 16, 3, 3), "fc1": (128, 512), "fc2": (10, 128)}


@pytest.mark.parametrize("density", [0.05, 0.1, 0.2, 0.5, 0.9])
def test_erk_total_is_exact_and_follows_the_formula(density):
    counts = erk_counts(SHAPES, density=density)
    total = sum(math.prod(s) for s in SHAPES.values())
    assert sum(counts.values()) == round(density * total)
    raw = {n: sum(s) / math.prod(s) for n, s in SHAPES.items()}
    sparse_layers = [n for n in SHAPES if counts[n] < math.prod(SHAPES[n])]
    # among layers that are not dense, density / raw is the same constant (up to rounding)
    scales = [counts[n] / math.prod(SHAPES[n]) / raw[n] for n in sparse_layers]
    assert max(scales) - min(scales) <= max(1 / (raw[n] * math.prod(SHAPES[n]))
                                            for n in sparse_layers) * 1.01


def test_erk_makes_overflowing_layers_dense_and_rescales():
    # conv1 (144 weights) has by far the largest raw ERK density: at 50% it would exceed 1
    counts = erk_counts(SHAPES, density=0.5)
    assert counts["conv1"] == 144
    raw_scale = counts["fc1"] / (128 * 512) / ((128 + 512) / (128 * 512))
    assert counts["conv2"] / 4608 == pytest.approx(raw_scale * (32 + 16 + 3 + 3) / 4608, rel=1e-3)


def test_uniform_and_dense_layers():
    counts = uniform_counts(SHAPES, density=0.2, dense=("conv1",))
    total = sum(math.prod(s) for s in SHAPES.values())
    assert counts["conv1"] == 144 and sum(counts.values()) == round(0.2 * total)
    rest = [counts[n] / math.prod(SHAPES[n]) for n in ("conv2", "fc1", "fc2")]
    assert max(rest) - min(rest) < 0.01
    with pytest.raises(NeuroplasticError, match="not masked"):
        uniform_counts(SHAPES, density=0.2, dense=("nope",))
    with pytest.raises(NeuroplasticError, match="density"):
        erk_counts(SHAPES, density=0.0)


def test_cubic_schedule_and_cosine_decay_hand_values():
    kw = dict(initial=0.5, final=0.9, start=100, end=200)
    assert cubic_sparsity(50, **kw) == 0.5 and cubic_sparsity(300, **kw) == 0.9
    # halfway: 0.9 + (0.5 - 0.9) * 0.5^3 = 0.85
    assert cubic_sparsity(150, **kw) == pytest.approx(0.85)
    assert cosine_decay(0, initial=0.3, final=0.0, total=100) == pytest.approx(0.3)
    assert cosine_decay(50, initial=0.3, final=0.0, total=100) == pytest.approx(0.15)
    assert cosine_decay(100, initial=0.5, final=0.005, total=100) == pytest.approx(0.005)
