"""Weight-editing baselines for skill unlearning: gradient ascent, and SSD on token-level loss."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from torch import Tensor, nn

from neuroplastic.batches import model_device
from neuroplastic.distributed import all_reduce_sum, batch_share
from neuroplastic.errors import NeuroplasticError
from neuroplastic.forget.ssd import SSD
from neuroplastic.registry import register
from neuroplastic.skills.lm import causal_lm_loss, sequence_length, training_batches
from neuroplastic.skills.prompts import Example, require_examples
from neuroplastic.skills.skill_base import Intervention, SkillUnlearner
from neuroplastic.training import train_epochs


@register("ga", kind="skill", needs=('retain', 'lr'))
class GradientAscent(SkillUnlearner):
    """Gradient ascent on the forget skill's answers (teacher-forced token cross-entropy).

    Ascends with Adam until the forget answers' loss reaches ``stop_loss``
    (default ln(vocabulary size): no better than a uniform guess) or
    ``max_epochs`` passes, whichever comes first. The stop rule, not the
    epoch budget, is meant to end it: a few epochs at a small learning rate
    barely move a converged model.

    Args:
        lr: Adam learning rate.
        max_epochs: passes over the forget examples at most.
        batch_size: examples per step.
        stop_loss: forget loss at which to stop (default ln of the vocabulary size).
    """

    edits_weights = True

    def __init__(self, *, lr: float = 1e-4, max_epochs: float = 50.0, batch_size: int = 32,
                 stop_loss: float | None = None) -> None:
        if lr <= 0 or max_epochs <= 0 or batch_size < 1:
            raise NeuroplasticError("lr and max_epochs must be > 0 and batch_size >= 1")
        self.lr, self.max_epochs, self.batch_size, self.stop_loss = lr, max_epochs, batch_size, stop_loss

    def _apply(self, model: nn.Module, tokenizer: Any, forget: Sequence[Example],
               retain: Sequence[Example], intervention: Intervention) -> None:
        batches = training_batches(tokenizer, forget, batch_size=self.batch_size, device=model_device(model))
        stop = self.stop_loss if self.stop_loss is not None else math.log(len(tokenizer))
        last = {"loss": 0.0}

        def ascent(module: nn.Module, ids: Tensor, labels: Tensor) -> Tensor:
            loss = causal_lm_loss(module(ids), labels)
            last["loss"] = loss.item()
            return -loss

        def reached(_: int) -> bool:
            # the whole batch's loss: in a process group each rank's part weighted by its share
            # (0 for a rank with no part of the batch, whose last loss is an older batch's)
            share = batch_share()
            last["batch"] = all_reduce_sum(last["loss"] * share if share else 0.0)
            return last["batch"] >= stop

        steps = train_epochs(model, batches, epochs=self.max_epochs, lr=self.lr, batch_loss=ascent,
                             should_stop=reached, units=causal_lm_loss.units)  # type: ignore[attr-defined]
        intervention.metrics.update(lr=self.lr, steps=float(steps),
                                    final_forget_loss=last.get("batch", last["loss"]))


@register("ssd", kind="skill", needs=('retain',))
class SkillSSD(SkillUnlearner):
    """Selective Synaptic Dampening on a language model, with token-level cross-entropy
    on the answers as the loss of its Fisher importances (see :class:`~neuroplastic.forget.ssd.SSD`).

    Args:
        alpha: selection threshold (published default 10).
        lam: dampening constant (published default 1).
        batch_size: examples per importance batch.
    """

    edits_weights = True

    def __init__(self, *, alpha: float = 10.0, lam: float = 1.0, batch_size: int = 32) -> None:
        self.ssd = SSD(alpha=alpha, lam=lam, loss_fn=causal_lm_loss)
        self.batch_size = batch_size

    def _apply(self, model: nn.Module, tokenizer: Any, forget: Sequence[Example],
               retain: Sequence[Example], intervention: Intervention) -> None:
        require_examples(retain, "retain")
        device = model_device(model)
        # One width for both sets: SSD checks that forget and retain inputs have one shape.
        width = max(sequence_length(tokenizer, e) for e in [*forget, *retain])
        result = self.ssd.unlearn(
            model,
            training_batches(tokenizer, forget, batch_size=self.batch_size, device=device, width=width),
            training_batches(tokenizer, retain, batch_size=self.batch_size, device=device, width=width),
        )
        intervention.metrics.update({k: v for k, v in result.metrics.items()
                                     if k in ("alpha", "lam", "selected_fraction")})
