"""Diagonal Fisher information, in the two forms people mean by it."""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap

from neuroplastic.batches import eval_mode, iter_batches, model_device
from neuroplastic.distributed import all_reduce_sums_
from neuroplastic.errors import NeuroplasticError
from neuroplastic.importance.base import BatchGradientEstimator, cross_entropy
from neuroplastic.targets import Targets
from neuroplastic.types import Data, LossFn, Scores

FisherMode = Literal["batch_sq", "per_sample"]


class Fisher(BatchGradientEstimator):
    """Diagonal Fisher importance.

    ``mode="batch_sq"`` (default): the square of the gradient of each
    batch-MEAN loss, averaged over batches — exactly what the reference code
    of SSD (Foster et al., AAAI 2024, arXiv 2308.07707) and of EWC computes.
    It depends on the batch size and grouping of the data.

    ``mode="per_sample"``: the empirical Fisher, the mean over samples of the
    squared gradient of each sample's loss, computed with ``torch.func``
    (vmap over grad). Needs a model that ``functional_call`` can run on one
    sample (no batch-dependent layers in eval mode).

    Args:
        mode: ``"batch_sq"`` or ``"per_sample"``.
        targets: which parameters to score (default: all that require grad).
    """

    def __init__(self, *, mode: FisherMode = "batch_sq", targets: Targets | None = None) -> None:
        if mode not in ("batch_sq", "per_sample"):
            raise NeuroplasticError(f"Fisher mode must be 'batch_sq' or 'per_sample', got {mode!r}")
        super().__init__(targets=targets)
        self.mode = mode

    @property
    def cache_key(self) -> str:
        return f"Fisher[{self.mode}]:{self.targets!r}"

    def transform(self, grad: Tensor, param: Tensor) -> Tensor:
        return grad.square()

    def estimate(self, model: nn.Module, data: Data, *, loss_fn: LossFn | None = None) -> Scores:
        if self.mode == "batch_sq":
            return super().estimate(model, data, loss_fn=loss_fn)
        return self._per_sample(model, data, loss_fn or cross_entropy)

    def _per_sample(self, model: nn.Module, data: Data, loss_fn: LossFn) -> Scores:
        named = dict(self.targets.named_parameters(model))
        frozen = {n: p.detach() for n, p in model.named_parameters() if n not in named}
        frozen.update(dict(model.named_buffers()))

        def sample_loss(params: dict[str, Tensor], x: Tensor, y: Tensor) -> Tensor:
            out = functional_call(model, (params, frozen), (x.unsqueeze(0),))
            return loss_fn(out, y.unsqueeze(0))

        per_sample_grads = vmap(grad(sample_loss), in_dims=(None, 0, 0))
        detached = {n: p.detach() for n, p in named.items()}
        sums = {n: torch.zeros_like(p, dtype=torch.float32) for n, p in named.items()}
        samples = 0
        with eval_mode(model):
            for x, y in iter_batches(data, device=model_device(model), name="importance"):
                grads = per_sample_grads(detached, x, y)
                for n, g in grads.items():
                    sums[n].add_(g.float().square().sum(0))
                samples += x.shape[0]
        samples = all_reduce_sums_(sums, samples)
        if samples == 0:
            raise NeuroplasticError("cannot estimate importance: the data is empty")
        return {n: total.div_(samples) for n, total in sums.items()}
