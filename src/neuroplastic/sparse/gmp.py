"""Gradual magnitude pruning (Zhu & Gupta 2017)."""

from __future__ import annotations

from torch import Tensor, nn

from neuroplastic.checks import require_choice, require_window
from neuroplastic.registry import register
from neuroplastic.sparse.base import Sparsifier, magnitude_masks
from neuroplastic.sparse.schedule import cubic_sparsity
from neuroplastic.types import Masks


@register("gmp", kind="sparse")
class GMP(Sparsifier):
    """Gradual magnitude pruning (Zhu & Gupta, "To prune, or not to prune", 2017): dense start,
    pruned at every update step to the cubic schedule's sparsity by magnitude, each layer
    to the same sparsity (``scope="layer"``, as in the paper) or with one global threshold;
    no regrowth."""

    def __init__(self, model: nn.Module, *, sparsity: float, total_steps: int,
                 prune_window: tuple[float, float] = (0.0, 0.7), scope: str = "layer",
                 **kwargs: object) -> None:
        start, end = require_window("prune_window", prune_window)
        self.prune_start = int(start * total_steps)
        self.prune_end = max(self.prune_start + 1, int(end * total_steps))
        self.scope = require_choice("scope", scope, ("layer", "global"))
        kwargs.setdefault("distribution", "uniform")
        super().__init__(model, sparsity=sparsity, total_steps=total_steps, **kwargs)  # type: ignore[arg-type]

    def initial_masks(self, weights: dict[str, Tensor]) -> Masks:
        return {n: w.new_ones(w.shape, dtype=bool) for n, w in weights.items()}

    def is_update_step(self, step: int) -> bool:
        return (super().is_update_step(step) and self.prune_start < step <= self.prune_end) \
            or step == self.prune_end

    def update(self, step: int) -> None:
        sparsity = cubic_sparsity(step, initial=0.0, final=self.sparsity, start=self.prune_start,
                                  end=self.prune_end)
        masks = self.masks.masks
        weights = {n: w.detach() * masks[n] for n, w in self.weights().items()}
        if self.scope == "global":
            new = self.global_top(weights, 1 - sparsity)
        else:
            new = magnitude_masks(weights, counts=self.layer_counts(1 - sparsity))
        self.masks.update({n: masks[n] & new[n] for n in masks})
