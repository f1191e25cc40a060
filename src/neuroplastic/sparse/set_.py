"""SET: sparse evolutionary training (Mocanu et al., Nature Communications 2018)."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from neuroplastic.checks import require_choice, require_in
from neuroplastic.registry import register
from neuroplastic.sparse.base import Sparsifier, drop_and_grow, random_masks
from neuroplastic.types import Masks


@register("set", kind="sparse")
class SET(Sparsifier):
    """SET (Mocanu et al., Nature Communications 2018): random Erdos-Renyi masks; at every
    update (once per epoch in the paper) each layer drops the fraction ``zeta`` of its
    active weights with the smallest magnitude and regrows as many at random positions.

    Args:
        zeta: fraction of each layer's active weights replaced at every update.
        regrow_init: ``"random"`` (default) draws each regrown weight like PyTorch's default
            linear/conv initialisation, U(-1/sqrt(fan_in), 1/sqrt(fan_in)), as the authors'
            sparse implementation draws new weights at random (N(0, 0.1^2) there). With
            ``"zero"`` a weight regrown into a unit that never fires gets no gradient and
            stays zero, so the trained model ends sparser than its masks (0.910 at a 0.900
            target on the digits CNN).
        **kwargs: as for :class:`Sparsifier`.
    """

    def __init__(self, model: nn.Module, *, sparsity: float, total_steps: int, zeta: float = 0.3,
                 regrow_init: str = "random", **kwargs: object) -> None:
        self.zeta = require_in("zeta", zeta, 0.0, 1.0, low_open=True, high_open=True)
        self.regrow_init = require_choice("regrow_init", regrow_init, ("random", "zero"))
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
        if self.regrow_init == "random":
            with torch.no_grad():
                for name, mask in new.items():
                    grown = mask & ~masks[name]
                    weight = weights[name]
                    bound = 1 / math.sqrt(math.prod(weight.shape[1:]))
                    values = torch.rand(int(grown.sum()), generator=self.generator) * 2 - 1
                    weight[grown] = (values * bound).to(weight.device, weight.dtype)
