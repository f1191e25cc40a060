"""Layer densities for a target overall density: uniform and ERK (Evci et al. 2020)."""

from __future__ import annotations

import math

from neuroplastic.errors import NeuroplasticError


def _counts_from_densities(shapes: dict[str, tuple[int, ...]], densities: dict[str, float],
                           total_active: int) -> dict[str, int]:
    """Active-weight counts per layer that sum exactly to ``total_active`` (largest remainders)."""
    sizes = {n: math.prod(s) for n, s in shapes.items()}
    exact = {n: min(densities[n], 1.0) * sizes[n] for n in shapes}
    counts = {n: min(math.floor(v), sizes[n]) for n, v in exact.items()}
    left = total_active - sum(counts.values())
    order = sorted(shapes, key=lambda n: exact[n] - counts[n], reverse=True)
    while left > 0:
        progressed = False
        for name in order:
            if left and counts[name] < sizes[name]:
                counts[name] += 1
                left -= 1
                progressed = True
        if not progressed:
            break
    while left < 0:
        for name in sorted(shapes, key=lambda n: counts[n], reverse=True):
            if left and counts[name] > 0:
                counts[name] -= 1
                left += 1
    return counts


def uniform_counts(shapes: dict[str, tuple[int, ...]], *, density: float,
                   dense: tuple[str, ...] = ()) -> dict[str, int]:
    """The same density in every layer (``dense`` layers kept full, the rest rescaled)."""
    return erk_counts(shapes, density=density, dense=dense, kind="uniform")


def erk_counts(shapes: dict[str, tuple[int, ...]], *, density: float,
               dense: tuple[str, ...] = (), kind: str = "erk") -> dict[str, int]:
    """Active weights per layer for overall ``density``.

    ERK (Erdos-Renyi-Kernel, Evci et al. "Rigging the Lottery", ICML 2020):
    density_l is proportional to sum(shape_l) / prod(shape_l); the scale is
    chosen so the total density is the target; a layer that would exceed 1
    is made dense and the rest rescaled, repeated until none exceeds 1.
    ``kind="uniform"`` uses the same raw proportion for every layer.

    Args:
        shapes: parameter name -> weight shape (2-D linear, 4-D conv, ...).
        density: overall fraction of active weights, in (0, 1].
        dense: names kept fully dense (e.g. the first layer); they count toward the total.

    Returns:
        Active-weight counts summing exactly to round(density * total weights).
    """
    if not 0 < density <= 1:
        raise NeuroplasticError(f"density must be in (0, 1], got {density}")
    unknown = set(dense) - set(shapes)
    if unknown:
        raise NeuroplasticError(f"cannot keep {sorted(unknown)[0]!r} dense: it is not masked")
    sizes = {n: math.prod(s) for n, s in shapes.items()}
    total = sum(sizes.values())
    target = round(density * total)
    if sum(sizes[n] for n in dense) > target:
        raise NeuroplasticError("the layers kept dense alone exceed the target density")
    raw = {n: (sum(s) / math.prod(s) if kind == "erk" else 1.0) for n, s in shapes.items()}
    full = set(dense)
    while True:
        budget = target - sum(sizes[n] for n in full)
        free = [n for n in shapes if n not in full]
        if not free:
            break
        scale = budget / sum(raw[n] * sizes[n] for n in free)
        over = [n for n in free if scale * raw[n] > 1]
        if not over:
            break
        full.update(over)
    densities = {n: 1.0 if n in full else scale * raw[n] for n in shapes}
    return _counts_from_densities(shapes, densities, target)
