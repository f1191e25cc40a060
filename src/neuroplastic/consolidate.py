"""Consolidation: remember where the weights were and how much each one matters.

``anchor`` copies the weights (theta*), ``quadratic_penalty`` is the EWC/SI
penalty sum_i F_i (theta_i - theta*_i)^2, and ``RunningScores`` keeps an
exponentially decayed sum of importances (online EWC's F* <- gamma F* + F_t).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from neuroplastic.errors import NeuroplasticError
from neuroplastic.targets import Targets
from neuroplastic.types import Scores


def anchor(model: nn.Module, targets: Targets | None = None) -> Scores:
    """A detached copy of every targeted parameter (default: all trainable ones)."""
    return {name: param.detach().clone() for name, param in (targets or Targets()).named_parameters(model)}


def quadratic_penalty(model: nn.Module, importance: Scores, anchor: Scores) -> Tensor:
    """sum over the named parameters of importance * (theta - anchor)^2 (no 1/2; differentiable
    in the model's parameters). Parameters without an importance (a new head) are free.

    Raises:
        NeuroplasticError: if an importance has no anchor or another shape than its parameter.
    """
    params = dict(model.named_parameters())
    total = None
    for name, weight in importance.items():
        if name not in anchor or name not in params:
            raise NeuroplasticError(f"no anchor or parameter for importance {name!r}")
        param = params[name]
        if weight.shape != param.shape or anchor[name].shape != param.shape:
            raise NeuroplasticError(f"importance or anchor of {name!r} has another shape than it")
        term = (weight.to(param.device) * (param - anchor[name].to(param.device)) ** 2).sum()
        total = term if total is None else total + term
    if total is None:
        device = next(iter(params.values())).device if params else None
        return torch.zeros((), device=device)
    return total


class RunningScores:
    """An exponentially decayed sum of importances: ``update(s)`` sets S <- decay * S + s.

    With ``decay = 1`` it is the plain sum over tasks; online EWC (Schwarz et al. 2018)
    uses gamma < 1.
    """

    def __init__(self, decay: float = 1.0) -> None:
        if not 0 <= decay <= 1:
            raise NeuroplasticError(f"decay must be in [0, 1], got {decay}")
        self.decay = decay
        self.scores: Scores = {}

    def update(self, scores: Scores) -> Scores:
        """Fold ``scores`` in; returns the running value."""
        for name, value in scores.items():
            old = self.scores.get(name)
            self.scores[name] = value.detach().clone() if old is None else self.decay * old + value.detach()
        return self.scores


@torch.no_grad()
def proximal_step_(model: nn.Module, terms: list[tuple[Scores, Scores]], *, scale: float) -> None:
    """The exact proximal step of the penalty (scale / 2) sum_k sum_i F_k,i (theta_i - a_k,i)^2
    after an optimizer step: theta <- (theta + scale sum_k F_k a_k) / (1 + scale sum_k F_k).

    With ``scale = lr * lambda`` it is the implicit (backward-Euler) step of EWC's penalty
    gradient lambda F (theta - a), which pulls theta toward the anchors and, unlike the explicit
    gradient step, never overshoots them however large lr * lambda * F is (the explicit step
    diverges once it exceeds 2). In place; parameters without an importance are left alone.
    """
    ProximalStep().apply_(model, terms, scale=scale)


class ProximalStep:
    """:func:`proximal_step_` with its constants ``scale sum_k F_k a_k`` and ``1 + scale
    sum_k F_k`` kept between calls: the terms change only at a task's end (call
    :meth:`reset` then), while the step runs after every optimizer step (two passes over
    each weight instead of nine). Results are bit-identical to computing them every time.
    """

    def __init__(self) -> None:
        self.constants: dict[str, tuple[Tensor, Tensor]] = {}
        self.scale: float | None = None  # what the constants were computed with (None: stale)

    def reset(self) -> None:
        """The terms changed: compute the constants anew at the next step."""
        self.scale = None

    @torch.no_grad()
    def apply_(self, model: nn.Module, terms: list[tuple[Scores, Scores]], *, scale: float) -> None:
        if self.scale != scale:
            self.constants = {}
            for name in terms[0][0] if terms else {}:
                f_sum = sum(f[name] for f, _ in terms)
                pull = sum(f[name] * a[name] for f, a in terms)
                self.constants[name] = (scale * pull, 1 + scale * f_sum)  # type: ignore[operator]
            self.scale = scale
        params = dict(model.named_parameters())
        for name, (shift, divisor) in self.constants.items():
            weight = params[name]
            weight.add_(shift.to(weight.device)).div_(divisor.to(weight.device))
