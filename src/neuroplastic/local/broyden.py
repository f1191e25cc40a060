"""A batched root finder: Broyden's ("good") method on many small independent systems.

Every row ``b`` of ``x`` (shape (batch, k)) is its own k-dimensional problem
``F_b(x_b) = 0``; one call of ``evaluate`` computes all rows at once. Each row keeps its own
inverse-Jacobian estimate ``H_b`` (k x k), updated after every step by the Sherman-Morrison
form of Broyden's rank-one secant update (Broyden, Math. Comp. 19, 1965):

    s = -H F(x),  x' = x + s,  y = F(x') - F(x),  H' = H + (s - H y) (s^T H) / (s^T H y).

Started from a good Jacobian, it converges superlinearly with one evaluation per step and
no derivative beyond the first estimate.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

import torch
from torch import Tensor

Aux = TypeVar("Aux")


@dataclass
class RootResult(Generic[Aux]):
    """Where the iteration stopped: the root estimate, what ``evaluate`` returned there, how
    many evaluations it took and whether ``converged`` accepted it."""

    x: Tensor
    aux: Aux
    evaluations: int
    converged: bool


def broyden(evaluate: Callable[[Tensor, Aux | None], tuple[Tensor, Aux]], x0: Tensor,
            inverse_jacobian: Tensor, *, converged: Callable[[Tensor, Aux], bool],
            iterations: int = 50, residual0: Tensor | None = None) -> RootResult[Aux]:
    """Solve ``F_b(x_b) = 0`` for every row ``b`` of ``x0``.

    Args:
        evaluate: ``(x, previous_aux) -> (F(x), aux)``; ``aux`` carries whatever the caller
            wants back (and can warm-start the next evaluation from ``previous_aux``).
        x0: the start, (batch, k).
        inverse_jacobian: the first estimate of ``(dF/dx)^-1`` per row, (batch, k, k).
        converged: ``(F, aux) -> bool``, checked at every iterate (the start included).
        iterations: the most steps taken.
        residual0: ``F(x0)`` when the caller knows it and knows ``x0`` is not a root: the
            first evaluation is skipped (``evaluate`` then first sees ``previous_aux=None``
            at the first step).

    Returns:
        The last iterate; ``converged`` False if the budget ran out or F became non-finite.
    """
    x, h = x0, inverse_jacobian
    if residual0 is None:
        residual, aux = evaluate(x, None)
        evaluations = 1
    else:
        residual, aux, evaluations = residual0, None, 0
    for step in range(iterations + 1):
        if not bool(torch.isfinite(residual).all()):
            return RootResult(x, aux, evaluations, False)  # type: ignore[arg-type]
        if (step > 0 or residual0 is None) and converged(residual, aux):  # type: ignore[arg-type]
            return RootResult(x, aux, evaluations, True)  # type: ignore[arg-type]
        if step == iterations:
            break
        s = -(h @ residual.unsqueeze(-1)).squeeze(-1)
        x = x + s
        new_residual, aux = evaluate(x, aux)
        evaluations += 1
        y = new_residual - residual
        hy = (h @ y.unsqueeze(-1)).squeeze(-1)
        s_h = (s.unsqueeze(1) @ h).squeeze(1)
        denominator = (s * hy).sum(-1, keepdim=True)
        usable = denominator.abs() > torch.finfo(denominator.dtype).tiny
        # a row whose step did not change F (already at its root) keeps its estimate
        correction = torch.where(usable, (s - hy) / torch.where(usable, denominator, 1.0), 0.0)
        h = h + correction.unsqueeze(-1) * s_h.unsqueeze(1)
        residual = new_residual
    return RootResult(x, aux, evaluations, False)  # type: ignore[arg-type]
