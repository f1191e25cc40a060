"""The learning-rate rules of concept-shift training (kind ``shift``), one small class each.

:func:`neuroplastic.adapt.homeostasis.train_shift` asks the rule once per mini-batch for the
rate of that batch's SGD step, passing a :class:`RateContext` (what the reference's rules
look at: the rate, the first sample's true label half, the predicted half and the
simulations, computed only when a rule asks for them).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass

import torch

from neuroplastic.registry import register


def moved(eta: float, step: float, *, up: bool) -> float:
    """eta +- step, a negative result clipped to 1e-8 (as the reference)."""
    value = eta + step if up else eta - step
    return value if value >= 0 else 1e-8


@dataclass
class RateContext:
    """What a rule sees at one mini-batch."""

    eta: float  # the current rate
    step_size: float  # eta0 / 10
    index_in_epoch: int  # i: the batch's first sample's position in this epoch
    memory: int  # samples the simulations score on (the reference's 20)
    true_upper: bool  # the first sample's true label is in the "excitatory" upper half
    predicted_upper: Callable[[], bool]  # ... as the model predicts it
    scores_better: Callable[[float], bool]  # a step at this rate beats one at eta on the memory
    generator: torch.Generator


class LearningRateRule(ABC):
    """A rule that sets the learning rate of each mini-batch (kind ``shift``).

    ``claims_recovery``: the rule exists to recover faster after a shift than the baseline's
    constant rate (a run that does not is warned about)."""

    claims_recovery: bool = False

    @abstractmethod
    def next_rate(self, ctx: RateContext) -> float:
        """The rate of this batch's step."""


@register("homeostatic", kind="shift", needs=('labels', 'lr'))
class Homeostatic(LearningRateRule):
    """Homeostatic learning rate (Man, Damasio & Neven 2022, ``lrh.py``): from the sample i >
    20 of an epoch, simulate a step at the rate the predicted label implies (+-eta0/10) and at
    the current one; if the change scores better on the 20 samples before, move the rate by
    the true label."""

    claims_recovery = True

    def next_rate(self, ctx: RateContext) -> float:
        if ctx.index_in_epoch <= ctx.memory:  # lrh.py: i > nMemo
            return ctx.eta
        proposed = moved(ctx.eta, ctx.step_size, up=ctx.predicted_upper())
        if ctx.scores_better(proposed):
            return moved(ctx.eta, ctx.step_size, up=ctx.true_upper)
        return ctx.eta


@register("random-lr", kind="shift", needs=('labels', 'lr'))
class RandomRate(LearningRateRule):
    """Random learning rate (the reference's control, ``lrr.py``): at every batch but an
    epoch's first, with probability 1/2 move the rate by the true label (+-eta0/10)."""

    def next_rate(self, ctx: RateContext) -> float:
        if ctx.index_in_epoch == 0:
            return ctx.eta
        if torch.rand((), generator=ctx.generator) > 0.5:
            return moved(ctx.eta, ctx.step_size, up=ctx.true_upper)
        return ctx.eta


@register("constant", kind="shift", needs=('labels', 'lr'))
class ConstantRate(LearningRateRule):
    """Constant learning rate: plain SGD at eta0 (the baseline of the shift comparison)."""

    baseline = True

    def next_rate(self, ctx: RateContext) -> float:
        return ctx.eta
