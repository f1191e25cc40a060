"""A third-party continual method, registered through the ``neuroplastic.methods`` entry-point
group (tests/test_plugins.py points the group here): one file, one registration."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from neuroplastic.checks import require_in
from neuroplastic.consolidate import anchor, quadratic_penalty
from neuroplastic.continual.base import ContinualMethod
from neuroplastic.registry import register


@register("l2-anchor", kind="continual")
class L2Anchor(ContinualMethod):
    """L2 pull toward the weights at the end of the last task (a plug-in example).

    Args:
        strength: the penalty's weight (>= 0).
    """

    def __init__(self, *, strength: float = 0.1) -> None:
        self.strength = require_in("strength", strength, 0.0, float("inf"), high_open=True)
        self.weights: dict[str, Tensor] = {}

    def loss(self, model: nn.Module, x: Tensor, y: Tensor, loss: Tensor) -> Tensor:
        if not self.weights:
            return loss
        ones = {name: torch.ones_like(w) for name, w in self.weights.items()}
        return loss + self.strength * quadratic_penalty(model, ones, self.weights)

    def after_task(self, model: nn.Module, experience: object) -> None:  # type: ignore[override]
        self.weights = anchor(model)
