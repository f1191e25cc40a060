"""Is a run's result usable at all? Non-finite weights and chance-level accuracy, in words.

Every CLI command passes what it trained and the accuracies it measured here; each finding
becomes a warning line on the console, a banner in the report and an entry of
``warnings`` in metrics.json.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

CHANCE_MARGIN = 0.05
"""An accuracy below chance + this margin counts as chance level."""


def non_finite(model: nn.Module) -> list[str]:
    """Names of the parameters and buffers of ``model`` holding NaN or inf."""
    tensors = [*model.named_parameters(), *model.named_buffers()]
    return [name for name, t in tensors if t.is_floating_point() and not bool(torch.isfinite(t).all())]


def health_warnings(*, models: Mapping[str, nn.Module] | None = None,
                    accuracies: Mapping[str, tuple[float, float]] | None = None) -> list[str]:
    """Sentences for every model whose weights are not finite and every accuracy at chance.

    Args:
        models: the models a run ends with, by name.
        accuracies: name -> (accuracy, chance level), e.g. (0.101, 0.1).

    Returns:
        One sentence per finding (empty when all is well).
    """
    notes = []
    for name, model in (models or {}).items():
        bad = non_finite(model)
        if bad:
            notes.append(f"{name}: the weights are not finite at the end ({len(bad)} tensor(s) hold NaN "
                         f"or inf, e.g. {bad[0]}): training diverged; lower the learning rate or the "
                         "method's strength")
    for name, (accuracy, chance) in (accuracies or {}).items():
        if accuracy != accuracy:
            notes.append(f"{name}: the accuracy is not a number (NaN): the outputs diverged")
        elif accuracy < chance + CHANCE_MARGIN:
            notes.append(f"{name}: accuracy {accuracy:.3f} is at chance level ({chance:.3f}): the model "
                         "learned nothing usable")
    return notes
