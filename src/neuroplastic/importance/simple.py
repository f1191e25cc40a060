"""Small importance estimators: loss-free (LFSSD), gradient, Taylor, magnitude."""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor, nn

from neuroplastic.batches import logits_of
from neuroplastic.importance.base import BatchGradientEstimator, ImportanceEstimator
from neuroplastic.types import Data, LossFn, Scores


class LossFree(BatchGradientEstimator):
    """Loss-free importance of LFSSD (Foster et al., ICLR 2024 Tiny Paper).

    Mean over batches of |gradient| of mean_i ||f(x_i)||_2^2, the squared L2
    norm of the logits; labels are not used.
    """

    def objective(self, output: Tensor, labels: Tensor, loss_fn: LossFn | None) -> Tensor:
        logits = logits_of(output)
        return logits.float().square().sum(-1).mean()

    def transform(self, grad: Tensor, param: Tensor) -> Tensor:
        return grad.abs()


class Gradient(BatchGradientEstimator):
    """Mean over batches of |gradient| of the batch-mean loss."""

    def transform(self, grad: Tensor, param: Tensor) -> Tensor:
        return grad.abs()


class Taylor(BatchGradientEstimator):
    """First-order Taylor saliency |g * theta| averaged over batches (as in SNIP, Lee et al. 2019)."""

    def transform(self, grad: Tensor, param: Tensor) -> Tensor:
        return (grad * param).abs()


class Magnitude(ImportanceEstimator):
    """|theta|; needs no data (``data`` is accepted for a uniform call and ignored)."""

    def estimate(
        self, model: nn.Module, data: Data | None = None, *, loss_fn: LossFn | None = None
    ) -> Scores:
        return self.of(dict(self.targets.named_parameters(model)))

    @staticmethod
    def of(tensors: Mapping[str, Tensor]) -> Scores:
        """|t| of each named tensor, detached, in float32 or wider (magnitude pruning's scores)."""
        return {n: t.detach().float().abs() for n, t in tensors.items()}
