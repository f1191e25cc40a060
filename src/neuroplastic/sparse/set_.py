"""SET: sparse evolutionary training (Mocanu et al., Nature Communications 2018)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from neuroplastic.registry import register
from neuroplastic.sparse.base import Sparsifier, drop_and_grow, random_masks
from neuroplastic.types import Masks


@register("set", kind="sparse")
class SET(Sparsifier):
    """SET (Mocanu et al., Nature Communications 2018): random Erdos-Renyi masks; at every
    update (once per epoch in the paper) each layer drops the fraction ``zeta`` of its
    active weights with the smallest magnitude and regrows as many at random positions,
    initialised at zero."""

    name = "set"

    def __init__(self, model: nn.Module, *, sparsity: float, total_steps: int, zeta: float = 0.3,
                 **kwargs: object) -> None:
        self.zeta = zeta
        super().__init__(model, sparsity=sparsity, total_steps=total_steps, **kwargs)  # type: ignore[arg-type]

    def initial_masks(self, weights: dict[str, Tensor]) -> Masks:
        return random_masks(weights, self.layer_counts(1 - self.sparsity), self.generator)

    def update(self, step: int) -> None:
        weights, masks = self.weights(), self.masks.masks
        new = {}
        for name in self.adjustable():
            mask = masks[name]
            scores = torch.rand(mask.shape, generator=self.generator).to(mask.device)
            new[name] = drop_and_grow(weights[name], mask, scores, round(self.zeta * int(mask.sum())))
        self.masks.update(new)
