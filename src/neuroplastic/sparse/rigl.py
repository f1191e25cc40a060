"""RigL: drop by magnitude, grow by dense gradient (Evci et al., ICML 2020)."""

from __future__ import annotations

from torch import Tensor, nn

from neuroplastic.checks import require_in
from neuroplastic.registry import register
from neuroplastic.sparse.base import Sparsifier, dense_grads, drop_and_grow, random_masks
from neuroplastic.sparse.schedule import cosine_decay
from neuroplastic.types import Masks


@register("rigl", kind="sparse")
class RigL(Sparsifier):
    """RigL (Evci et al., "Rigging the Lottery", ICML 2020): constant-density sparse training.

    Random ERK masks at the target density; every ``update_frequency`` steps
    until ``end`` (75% of training) each layer drops the fraction
    f(t) = drop_fraction / 2 * (1 + cos(pi t / T_end)) of its active weights by
    smallest magnitude and grows as many by largest |dense gradient|; new
    weights start at zero.
    """

    uses_dense_gradient = True

    def __init__(self, model: nn.Module, *, sparsity: float, total_steps: int,
                 drop_fraction: float = 0.3, end: float = 0.75, **kwargs: object) -> None:
        self.drop_fraction = require_in("drop_fraction", drop_fraction, 0.0, 1.0, low_open=True)
        self.end_step = max(1, int(require_in("end", end, 0.0, 1.0, low_open=True) * total_steps))
        super().__init__(model, sparsity=sparsity, total_steps=total_steps, **kwargs)  # type: ignore[arg-type]

    def update_end(self) -> int:
        return self.end_step

    def initial_masks(self, weights: dict[str, Tensor]) -> Masks:
        return random_masks(weights, self.layer_counts(1 - self.sparsity), self.generator)

    def update(self, step: int) -> None:
        fraction = cosine_decay(step, initial=self.drop_fraction, final=0.0, total=self.end_step)
        weights, grads = self.weights(), dense_grads(self)
        masks = self.masks.masks
        self.masks.update({
            n: drop_and_grow(weights[n], masks[n], grads[n].abs(),
                             round(fraction * int(masks[n].sum())))
            for n in self.adjustable()})
