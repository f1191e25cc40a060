"""Diagonal Fisher information, in the two forms people mean by it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap

from neuroplastic.batches import eval_mode, iter_batches, logits_of, model_device
from neuroplastic.distributed import all_reduce_sums_
from neuroplastic.errors import NeuroplasticError
from neuroplastic.importance.base import BatchGradientEstimator, cross_entropy
from neuroplastic.importance.per_sample import squared_grad_sums, uncovered
from neuroplastic.sharded import batch_parts, has_sharded_parameters, like_parameter, refuse
from neuroplastic.targets import Targets
from neuroplastic.types import Data, LossFn, Scores

FisherMode = Literal["batch_sq", "per_sample", "exact"]
FISHER_MODES = ("batch_sq", "per_sample", "exact")


class Fisher(BatchGradientEstimator):
    """Diagonal Fisher importance.

    ``mode="batch_sq"`` (default): the square of the gradient of each
    batch-MEAN loss, averaged over batches — exactly what the reference code
    of SSD (Foster et al., AAAI 2024, arXiv 2308.07707) and of EWC computes.
    It depends on the batch size and grouping of the data.

    ``mode="per_sample"``: the empirical Fisher, the mean over samples of the
    squared gradient of each sample's loss. Linear, Conv2d, eval-mode BatchNorm and
    LayerNorm parameters get it from one batched forward and backward pass
    (:mod:`neuroplastic.importance.per_sample`: ``(d^2)^T (a^2)`` and friends); any
    other parameter by ``torch.func`` (vmap over grad), which needs a model that
    ``functional_call`` can run on one sample (no batch-dependent layers in eval mode).

    ``mode="exact"``: the true Fisher of the model's predictive distribution,
    mean over samples of sum_c p(c|x) (d/dtheta log p(c|x))^2 -- every label
    weighted by its predicted probability, not the true label (van de Ven's
    continual-learning code's default for EWC). Labels are not used, except
    that a ``loss_fn`` with a ``masked_logits(logits, labels)`` method (a task-IL
    stream's :class:`~neuroplastic.data.streams.TaskMaskedLoss`) restricts the
    softmax to each sample's own output units, as training does (van de Ven's
    code restricts the output to the task's units; Avalanche uses the task's
    head). Costs one per-sample gradient per class.

    ``batch_sq`` and ``per_sample`` differentiate ``loss_fn`` itself, so a
    task-masked loss gives the task-IL Fisher there too.

    Args:
        mode: ``"batch_sq"``, ``"per_sample"`` or ``"exact"``.
        targets: which parameters to score (default: all that require grad).
    """

    def __init__(self, *, mode: FisherMode = "batch_sq", targets: Targets | None = None) -> None:
        if mode not in FISHER_MODES:
            raise NeuroplasticError(f"Fisher mode must be one of {', '.join(FISHER_MODES)}, got {mode!r}")
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
        if self.mode == "exact":
            refuse(model, 'Fisher(mode="exact")', "its per-class gradients run the model through "
                   "torch.func.functional_call; use mode='per_sample' or 'batch_sq'")
            return self._exact(model, data, getattr(loss_fn, "masked_logits", None))
        return self._per_sample(model, data, loss_fn or cross_entropy)

    def _exact(self, model: nn.Module, data: Data,
               mask: Callable[[Tensor, Tensor], Tensor] | None) -> Scores:
        named = dict(self.targets.named_parameters(model))
        frozen = {n: p.detach() for n, p in model.named_parameters() if n not in named}
        frozen.update(dict(model.named_buffers()))

        def masked(logits: Tensor, y: Tensor) -> Tensor:
            return logits if mask is None else mask(logits, y)

        def class_nll(params: dict[str, Tensor], x: Tensor, y: Tensor, one_hot: Tensor) -> Tensor:
            out = logits_of(functional_call(model, (params, frozen), (x.unsqueeze(0),)))
            log_p = torch.log_softmax(masked(out, y.unsqueeze(0)), -1)[0]
            # -log p(c|x), c = one_hot; a masked unit (p = 0, weight 0) contributes nothing
            return -torch.where(one_hot.bool(), log_p, torch.zeros_like(log_p)).sum()

        # per sample (outer vmap) and per class (inner vmap): gradients of -log p(c|x)
        per_class = vmap(vmap(grad(class_nll), in_dims=(None, None, None, 0)), in_dims=(None, 0, 0, None))
        detached = {n: p.detach() for n, p in named.items()}
        sums = {n: torch.zeros_like(p, dtype=torch.float32) for n, p in named.items()}
        samples = 0
        with eval_mode(model), torch.no_grad():
            for x, y in iter_batches(data, device=model_device(model), name="importance"):
                probs = torch.softmax(masked(logits_of(model(x)), y).float(), -1)  # (B, K)
                classes = torch.eye(probs.shape[1], device=x.device, dtype=probs.dtype)
                with torch.enable_grad():
                    grads = per_class(detached, x, y, classes)  # each (B, K, *shape)
                for n, g in grads.items():
                    weight = probs.reshape(*probs.shape, *([1] * (g.dim() - 2)))
                    sums[n].add_((weight * g.float().square()).sum((0, 1)))
                samples += x.shape[0]
        samples = all_reduce_sums_(sums, samples)
        if samples == 0:
            raise NeuroplasticError("cannot estimate importance: the data is empty")
        return {n: total.div_(samples) for n, total in sums.items()}

    def _per_sample(self, model: nn.Module, data: Data, loss_fn: LossFn) -> Scores:
        named = dict(self.targets.named_parameters(model))
        if has_sharded_parameters(model):
            return self._per_sample_sharded(model, named, data, loss_fn)
        sums = {n: torch.zeros_like(p, dtype=torch.float32) for n, p in named.items()}
        samples = 0
        with eval_mode(model):
            for x, y in iter_batches(data, device=model_device(model), name="importance"):
                for n, total in squared_grad_sums(model, named, x, y, loss_fn).items():
                    sums[n].add_(total)
                samples += x.shape[0]
        samples = all_reduce_sums_(sums, samples)
        if samples == 0:
            raise NeuroplasticError("cannot estimate importance: the data is empty")
        return {n: total.div_(samples) for n, total in sums.items()}

    def _per_sample_sharded(self, model: nn.Module, named: dict[str, nn.Parameter], data: Data,
                            loss_fn: LossFn) -> Scores:
        """``per_sample`` on an FSDP2 model: every rank runs every batch on its rows (in step,
        for FSDP's collectives); the per-sample squares of covered layers come from their
        inputs and output gradients, so each rank sums whole-shaped squares over its rows; the
        sums are all-reduced and each rank keeps its slice."""
        sums = {n: torch.zeros(p.shape, dtype=torch.float32, device=p.device) for n, p in named.items()}
        samples = 0
        with eval_mode(model):
            if rest := uncovered(model, set(named)):
                refuse(model, 'Fisher(mode="per_sample")', f"{sorted(rest)[0]!r} is not in a Linear, Conv2d "
                       "or eval-mode norm layer (others take torch.func); use mode='batch_sq'")
            for x, y, _ in batch_parts(data, model_device(model), name="importance"):
                if not x.is_floating_point():
                    refuse(model, 'Fisher(mode="per_sample")', "integer inputs (token ids) need the "
                           "parameters' own gradients; use mode='batch_sq'")
                if x.shape[0]:
                    for n, total in squared_grad_sums(model, named, x, y, loss_fn).items():
                        sums[n].add_(total)
                else:  # no rows here, but this rank must take part in the collectives
                    leaf = x.detach().requires_grad_()
                    torch.autograd.grad(logits_of(model(leaf * 1)).sum() * 0.0, [leaf], allow_unused=True)
                samples += x.shape[0]
        samples = all_reduce_sums_(sums, samples)
        if samples == 0:
            raise NeuroplasticError("cannot estimate importance: the data is empty")
        return {n: like_parameter(total.div_(samples), named[n]) for n, total in sums.items()}
