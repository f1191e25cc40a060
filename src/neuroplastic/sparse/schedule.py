"""Schedules of gradual pruning and of the prune-and-regrow fraction."""

from __future__ import annotations

import math


def cubic_sparsity(step: int, *, initial: float, final: float, start: int, end: int) -> float:
    """Gradual pruning schedule of Zhu & Gupta 2017 (also GraNet's):
    s_t = s_f + (s_i - s_f) * (1 - (t - t_0) / (t_end - t_0))^3, clamped outside [t_0, t_end].
    """
    if step <= start:
        return initial
    if step >= end:
        return final
    progress = (step - start) / (end - start)
    return final + (initial - final) * (1 - progress) ** 3


def cosine_decay(step: int, *, initial: float, final: float, total: int) -> float:
    """initial -> final along half a cosine over ``total`` steps (RigL's drop fraction when
    final = 0: f(t) = initial / 2 * (1 + cos(pi t / total)))."""
    if step >= total:
        return final
    return final + (initial - final) * 0.5 * (1 + math.cos(math.pi * step / total))
