"""One-shot pruning: SNIP at initialisation, magnitude pruning of a trained model."""

from __future__ import annotations

from torch import Tensor, nn

from neuroplastic.checks import require_choice
from neuroplastic.errors import NeuroplasticError
from neuroplastic.importance.simple import Taylor
from neuroplastic.registry import register
from neuroplastic.sparse.base import Sparsifier, magnitude_masks
from neuroplastic.targets import Targets
from neuroplastic.types import Data, Masks


class OneShot(Sparsifier):
    """Masks fixed at construction; ``step()`` keeps them (e.g. while fine-tuning)."""

    def is_update_step(self, step: int) -> bool:
        return False


@register("snip", kind="sparse", needs=("full",))
class SNIP(OneShot):
    """SNIP (Lee et al., ICLR 2019): at initialisation, keep the global top-k connections by
    saliency |g * w| on one batch of ``data``; the masks never change afterwards."""

    def __init__(self, model: nn.Module, *, sparsity: float, total_steps: int = 1,
                 data: Data | None = None, **kwargs: object) -> None:
        if data is None:
            raise NeuroplasticError("snip needs a batch of training data (data=...)")
        first = next(iter(data), None)
        if first is None:
            raise NeuroplasticError("snip needs a non-empty batch of training data")
        self._batch = [first]
        self._model = model
        super().__init__(model, sparsity=sparsity, total_steps=total_steps, **kwargs)  # type: ignore[arg-type]
        del self._model, self._batch

    def initial_masks(self, weights: dict[str, Tensor]) -> Masks:
        # the saliency of exactly the weights the sparsifier masks (the user's targets)
        scores = Taylor(targets=Targets(include=tuple(weights))).estimate(self._model, self._batch)
        return self.global_top({n: scores[n] for n in weights}, 1 - self.sparsity)


@register("magnitude", kind="sparse")
class MagnitudePruning(OneShot):
    """One-shot magnitude pruning of a trained model: keep the largest |w|, with one global
    threshold (``scope="global"``) or the same sparsity in every layer (``scope="layer"``);
    fine-tune afterwards with the masks fixed."""

    prunes_trained = True

    def __init__(self, model: nn.Module, *, sparsity: float, total_steps: int = 1,
                 scope: str = "global", **kwargs: object) -> None:
        self.scope = require_choice("scope", scope, ("global", "layer"))
        kwargs.setdefault("distribution", "uniform")
        super().__init__(model, sparsity=sparsity, total_steps=total_steps, **kwargs)  # type: ignore[arg-type]

    def initial_masks(self, weights: dict[str, Tensor]) -> Masks:
        if self.scope == "global":
            return self.global_top(weights, 1 - self.sparsity)
        return magnitude_masks(weights, counts=self.layer_counts(1 - self.sparsity))


@register("dense", kind="sparse", baseline=True)
class Dense:
    """No sparsity at all (baseline: the dense network every sparse run is compared with);
    ``sparse_fit`` trains it without a sparsifier."""

    sparsifies = False
    prunes_trained = False
