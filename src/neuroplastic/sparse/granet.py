"""GraNet: gradual pruning plus zero-cost neuroregeneration (Liu et al., NeurIPS 2021)."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from neuroplastic.checks import require_in, require_window
from neuroplastic.registry import register
from neuroplastic.sparse.base import (
    Sparsifier,
    dense_grads,
    drop_and_grow,
    random_masks,
)
from neuroplastic.sparse.schedule import cosine_decay, cubic_sparsity
from neuroplastic.types import Masks


@register("granet", kind="sparse")
class GraNet(Sparsifier):
    """GraNet (Liu et al., NeurIPS 2021, arXiv 2106.10404): gradual global magnitude pruning
    with per-layer gradient regrowth.

    Starts from a random ERK network at ``initial_density``; at every update
    step inside the pruning window the network is pruned to the cubic
    schedule's density with ONE global magnitude threshold; then, at every
    update step (also after the window), each layer drops ceil(r * active)
    smallest-magnitude weights and regrows as many inactive ones with the
    largest |dense gradient|, new weights at zero. r decays with a cosine
    from ``death_rate`` to ``final_death_rate``. Unlike the reference code,
    the final density is reached exactly at the end of the window.

    As in the reference code, the global prune keeps the entries whose |w| is
    strictly above the k-th largest, k = int(total * density) (so k - 1 when
    there are no ties), and zeroes the pruned weights before the drop-and-regrow,
    so a weight pruned and regrown in the same event restarts at zero (a weight
    dropped by the per-layer step and regrown at once keeps its value there).

    Args:
        initial_density: density of the random ERK start (raised to the final density if lower).
        prune_window: (start, end) of gradual pruning as fractions of training.
        death_rate, final_death_rate: the cosine-decayed regrowth fraction r.
        See :class:`~neuroplastic.sparse.base.Sparsifier` for the rest.
    """

    uses_dense_gradient = True

    def __init__(self, model: nn.Module, *, sparsity: float, total_steps: int,
                 initial_density: float = 0.5, prune_window: tuple[float, float] = (0.0, 0.7),
                 death_rate: float = 0.5, final_death_rate: float = 0.005,
                 **kwargs: object) -> None:
        require_in("initial_density", initial_density, 0.0, 1.0, low_open=True)
        start, end = require_window("prune_window", prune_window)
        require_in("death_rate", death_rate, 0.0, 1.0)
        require_in("final_death_rate", final_death_rate, 0.0, 1.0)
        # a start sparser than the target would need pruning in reverse: start at the target
        self.initial_density = max(initial_density, 1 - sparsity)
        self.prune_start = int(start * total_steps)
        self.prune_end = max(self.prune_start + 1, int(end * total_steps))
        self.death_rate, self.final_death_rate = death_rate, final_death_rate
        super().__init__(model, sparsity=sparsity, total_steps=total_steps, **kwargs)  # type: ignore[arg-type]

    def initial_masks(self, weights: dict[str, Tensor]) -> Masks:
        return random_masks(weights, self.layer_counts(self.initial_density), self.generator)

    def is_update_step(self, step: int) -> bool:
        # the last pruning step is always an update, so the final density is reached
        return super().is_update_step(step) or step == self.prune_end

    def global_prune(self, weights: dict[str, Tensor], density_: float) -> Masks:
        """The reference's global magnitude prune: over all masked entries, k =
        int(total * density); keep |w| strictly above the k-th largest |w| (dense layers
        are kept and counted)."""
        total = sum(math.prod(s) for s in self.shapes.values())
        fixed = sum(math.prod(self.shapes[n]) for n in self.dense_layers)
        names = self.adjustable()
        k = int(total * density_) - fixed
        scores = torch.cat([weights[n].abs().reshape(-1) for n in names])
        threshold = torch.topk(scores, k).values.min() if k > 0 else torch.tensor(math.inf)
        masks = {n: weights[n].abs() > threshold for n in names}
        for name in self.dense_layers:
            masks[name] = torch.ones(self.shapes[name], dtype=torch.bool, device=weights[name].device)
        return masks

    def target_density(self, step: int) -> float:
        return 1 - cubic_sparsity(step, initial=1 - self.initial_density, final=self.sparsity,
                                  start=self.prune_start, end=self.prune_end)

    def update(self, step: int) -> None:
        weights = self.weights()
        masks = dict(self.masks.masks)
        if self.prune_start < step <= self.prune_end:
            active = {n: w.detach() * masks[n] for n, w in weights.items()}
            pruned = self.global_prune(active, self.target_density(step))
            masks = {n: masks[n] & pruned[n] for n in masks}
            self.masks.update(masks)  # pruned weights are zero before anything regrows
        rate = cosine_decay(step, initial=self.death_rate, final=self.final_death_rate,
                            total=self.total_steps)
        grads = dense_grads(self)
        new = {n: drop_and_grow(weights[n], masks[n], grads[n].abs(),
                                math.ceil(rate * int(masks[n].sum())))
               for n in self.adjustable()}
        self.masks.update({**masks, **new})
