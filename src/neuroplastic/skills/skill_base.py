"""The skill-forgetting verb: ``SkillUnlearner.apply(model, tokenizer, forget, retain) -> Intervention``.

A skill method either edits activations at inference (hooks), abstains at
generation (a guard around ``generate``), or edits weights. All three return
an :class:`Intervention` whose ``remove()`` restores the original model
bit for bit, and whose ``generate`` is what evaluation calls.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from neuroplastic.intervene.atomic import restore_, snapshot
from neuroplastic.skills.generation import GenerateFn, plain_generate
from neuroplastic.skills.prompts import Example, require_examples


@dataclass
class Intervention:
    """An applied skill method.

    Attributes:
        generate: ``generate(model, **inputs) -> (sequences, abstained)``.
        metrics: what the method chose (neurons per layer, k, threshold, ...) and seconds.
        details: arrays for reports (e.g. key scores), not part of metrics.json.
    """

    generate: GenerateFn = plain_generate
    metrics: dict[str, Any] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    undo: list[Callable[[], None]] = field(default_factory=list)

    def remove(self) -> None:
        """Undo the method (hooks removed, weights restored); safe to call twice."""
        while self.undo:
            self.undo.pop()()

    def __enter__(self) -> Intervention:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()


def weight_restorer(model: nn.Module) -> Callable[[], None]:
    """A callable that puts back the model's current parameters and buffers."""
    saved = snapshot(model)
    return lambda: restore_(model, saved)


class SkillUnlearner(ABC):
    """Makes a causal LM lose one skill (given by example prompts) and keep the others.

    :meth:`apply` is atomic: on any error, hooks are removed and weights restored.
    """

    name: str = "skill"
    edits_weights: bool = False  # if True, apply() snapshots the weights so remove() can restore them

    def apply(self, model: nn.Module, tokenizer: Any, forget: Sequence[Example],
              retain: Sequence[Example]) -> Intervention:
        """Apply the method to ``model`` (in place) and return its :class:`Intervention`.

        Args:
            model: a Hugging Face causal LM.
            tokenizer: its tokenizer.
            forget: examples of the skill to forget.
            retain: examples of the skills to keep (methods that do not need
                them ignore them).
        """
        require_examples(forget, "forget")
        start = time.perf_counter()
        intervention = Intervention(undo=[weight_restorer(model)] if self.edits_weights else [])
        try:
            self._apply(model, tokenizer, forget, retain, intervention)
        except BaseException:
            intervention.remove()
            raise
        finally:
            model.eval()
        intervention.metrics["seconds"] = time.perf_counter() - start
        intervention.metrics.setdefault("method", self.name)
        return intervention

    @abstractmethod
    def _apply(self, model: nn.Module, tokenizer: Any, forget: Sequence[Example],
               retain: Sequence[Example], intervention: Intervention) -> None:
        """Method body: install hooks / guard / edit weights, appending undo steps."""
