"""The estimator interface: ``estimate(model, data, *, loss_fn=None) -> Scores``."""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from torch import Tensor, nn

from neuroplastic import distributed
from neuroplastic.batches import eval_mode, iter_batches, logits_of, model_device
from neuroplastic.distributed import all_reduce_sums_
from neuroplastic.errors import NeuroplasticError
from neuroplastic.losses import cross_entropy
from neuroplastic.sharded import batch_parts, has_sharded_parameters, is_sharded
from neuroplastic.targets import Targets
from neuroplastic.types import Data, LossFn, Scores


class ImportanceEstimator(ABC):
    """Scores every targeted parameter entry of a model on some data.

    Estimators keep no reference to the model; it is passed per call.
    """

    def __init__(self, *, targets: Targets | None = None) -> None:
        self.targets = targets or Targets()

    @property
    def cache_key(self) -> str:
        """Identifies what is computed (estimator + its settings + targets) for caching."""
        return f"{type(self).__name__}:{self.targets!r}"

    @abstractmethod
    def estimate(self, model: nn.Module, data: Data, *, loss_fn: LossFn | None = None) -> Scores:
        """Return one non-negative score tensor per targeted parameter."""


class BatchGradientEstimator(ImportanceEstimator):
    """Mean over batches of ``transform(grad of the batch objective, parameter)``.

    Each batch's objective is computed in eval mode (BatchNorm uses running
    statistics), and a short last batch counts as a full one — as in the
    SSD reference code. Subclasses choose the objective and the transform.

    On an FSDP2 model every rank runs every batch on its part of the rows
    (:func:`neuroplastic.sharded.batch_parts`); FSDP's reduce-scatter then gives each rank
    its slice of the whole batch's gradient, and the scores come back as DTensors sharded
    like the parameters.
    """

    def objective(self, output: Tensor, labels: Tensor, loss_fn: LossFn | None) -> Tensor:
        return (loss_fn or cross_entropy)(output, labels)

    @abstractmethod
    def transform(self, grad: Tensor, param: Tensor) -> Tensor:
        """Per-entry score of one batch gradient."""

    def estimate(self, model: nn.Module, data: Data, *, loss_fn: LossFn | None = None) -> Scores:
        if has_sharded_parameters(model):
            return self._estimate_sharded(model, data, loss_fn)
        named = self.targets.named_parameters(model)
        params = [p for _, p in named]
        sums = {name: torch.zeros_like(p, dtype=torch.float32) for name, p in named}
        batches = 0
        device = model_device(model)
        with eval_mode(model):
            for x, y in iter_batches(data, device=device, name="importance"):
                loss = self.objective(model(x), y, loss_fn)
                grads = list(torch.autograd.grad(loss, params, allow_unused=True))
                for index, (name, param) in enumerate(named):
                    grad, grads[index] = grads[index], None  # freed as soon as it is summed
                    if grad is not None:
                        sums[name].add_(self.transform(grad.float(), param.detach().float()))
                    del grad
                batches += 1
        batches = all_reduce_sums_(sums, batches)
        if batches == 0:
            raise NeuroplasticError("cannot estimate importance: the data is empty")
        return {name: total.div_(batches) for name, total in sums.items()}

    def _estimate_sharded(self, model: nn.Module, data: Data, loss_fn: LossFn | None) -> Scores:
        """:meth:`estimate` on an FSDP2 model: the batch gradient comes from ``backward`` (FSDP
        writes each rank's slice of it to ``.grad``; the gradients the model had are put back
        afterwards)."""
        named = self.targets.named_parameters(model)
        params = [p for p in model.parameters() if p.requires_grad]
        kept = [p.grad for p in params]
        sums = {name: torch.zeros_like(p, dtype=torch.float32) for name, p in named}
        world, batches = distributed.world_size(), 0
        try:
            with eval_mode(model):
                for x, y, share in batch_parts(data, model_device(model), name="importance"):
                    for p in params:
                        p.grad = None
                    output = model(x)
                    if x.shape[0]:  # FSDP averages over the ranks: scaled, the average is the batch's mean
                        loss = self.objective(output, y, loss_fn) * (share * world)
                    else:  # no rows here, but this rank must take part in the collectives
                        loss = logits_of(output).sum() * 0.0
                    loss.backward()
                    # an unsharded parameter (outside every fully_shard) is reduced here
                    distributed.all_reduce_gradients_([p for p in params if not is_sharded(p)], share)
                    with torch.no_grad():
                        for name, param in named:
                            if param.grad is not None:
                                sums[name].add_(self.transform(param.grad.float(), param.detach().float()))
                    batches += 1
        finally:
            for p, grad in zip(params, kept, strict=True):
                p.grad = grad
        if batches == 0:
            raise NeuroplasticError("cannot estimate importance: the data is empty")
        return {name: total.div_(batches) for name, total in sums.items()}
