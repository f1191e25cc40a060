"""Checks of keyword hyperparameters at construction: one line naming the parameter."""

from __future__ import annotations

import math
from collections.abc import Iterable

from neuroplastic.errors import NeuroplasticError


def require_in(name: str, value: object, low: float, high: float, *, low_open: bool = False,
               high_open: bool = False) -> float:
    """``value`` as a float, if it is a finite number in the interval; else one line."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok:
        ok = (value > low if low_open else value >= low) and (value < high if high_open else value <= high)
    if not ok:
        interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        raise NeuroplasticError(f"{name} must be a number in {interval}, got {value!r}")
    return float(value)  # type: ignore[arg-type]


def require_positive(name: str, value: object) -> float:
    """``value`` as a float, if it is a finite number > 0."""
    return require_in(name, value, 0.0, math.inf, low_open=True, high_open=True)


def require_choice(name: str, value: object, choices: Iterable[str]) -> str:
    """``value`` if it is one of ``choices`` (a typo like 'glboal' is refused, not ignored)."""
    options = tuple(choices)
    if value not in options:
        raise NeuroplasticError(f"{name} must be one of {', '.join(map(repr, options))}, got {value!r}")
    return value  # type: ignore[return-value]


def require_window(name: str, window: object) -> tuple[float, float]:
    """A (start, end) fraction of training with 0 <= start < end <= 1."""
    if not (isinstance(window, (tuple, list)) and len(window) == 2):
        raise NeuroplasticError(f"{name} must be a (start, end) pair, got {window!r}")
    start = require_in(f"{name} start", window[0], 0.0, 1.0)
    end = require_in(f"{name} end", window[1], 0.0, 1.0)
    if not start < end:
        raise NeuroplasticError(f"{name} must satisfy start < end, got {tuple(window)}")
    return start, end
