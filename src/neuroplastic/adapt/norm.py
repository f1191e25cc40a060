"""Norm and TENT: test-time normalisation and entropy minimisation.

- Norm (Schneider et al., NeurIPS 2020; TENT's ``norm`` baseline): BatchNorm normalises
  each test batch with that batch's own statistics.
- TENT (Wang et al., ICLR 2021; reference ``DequanWang/tent``): the same, plus one Adam step
  per batch on the batch-mean softmax entropy with respect to the normalisation layers'
  affine parameters only (everything else frozen); published defaults Adam lr 1e-3,
  betas (0.9, 0.999), no weight decay, one step, online. The logits reported for a batch are
  those of the last forward pass (the one the last step was computed from), as in the
  reference's ``forward``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from neuroplastic.adapt.base import (
    BATCH_NORMS,
    OTHER_NORMS,
    Adapter,
    batch_statistics,
    entropy,
    mixed_statistics,
    require_norms,
)
from neuroplastic.checks import require_in, require_positive
from neuroplastic.registry import register


@register("norm", kind="adapt", baseline=True)
class Norm(Adapter):
    """Test-time BatchNorm (Schneider et al., NeurIPS 2020): normalise every test batch with
    its own statistics, or with a mix of the source's and the batch's.

    Args:
        prior: weight of the source (running) statistics, Schneider et al.'s N / (N + n)
            for a prior strength N and batch size n: each BatchNorm normalises with mean
            prior * mu_source + (1 - prior) * mu_batch and the same mix of the variances
            (the batch's unbiased variance, as their code). 0 (default, TENT's ``norm``):
            the batch's own statistics alone; 1: the source model.
        update_running: also move the running estimates towards the test batches (momentum
            as the layer's, 0.1 by default), as TENT's ``Norm`` does; they are not used for
            the adapted predictions (with ``prior`` 0), only by later eval-mode use.
    """

    def __init__(self, *, prior: float = 0.0, update_running: bool = False, episodic: bool = False,
                 small_batch: str = "error") -> None:
        super().__init__(episodic=episodic, small_batch=small_batch)
        self.prior = require_in("prior", prior, 0.0, 1.0)
        if self.prior > 0 and update_running:
            from neuroplastic.errors import NeuroplasticError

            raise NeuroplasticError("norm: prior > 0 mixes the source statistics in, so it cannot "
                                    "also update them (update_running)")
        self.update_running = update_running

    def setup(self, model: nn.Module) -> None:
        require_norms(model, "norm")

    def step(self, model: nn.Module, x: Tensor) -> Tensor:
        if self.prior > 0:
            with torch.no_grad(), mixed_statistics(model, prior=self.prior):
                return model(x)
        with torch.no_grad(), batch_statistics(model, keep_running=not self.update_running):
            return model(x)


@register("tent", kind="adapt", needs=('lr',))
class Tent(Adapter):
    """TENT (Wang et al., ICLR 2021): test-time entropy minimisation over the normalisation
    layers' affine parameters, with batch statistics.

    Args:
        lr, betas, weight_decay, steps: Adam and steps per batch (the published 1e-3,
            (0.9, 0.999), 0, 1).
        norms: which layers adapt: ``batch`` (BatchNorm1d/2d/3d) or ``all`` (also LayerNorm
            and GroupNorm). The reference matches ``nn.BatchNorm2d`` only (an MLP with
            BatchNorm1d adapts nothing there) and runs the whole model in train mode (dropout
            on); this library adapts every BatchNorm and keeps every other layer in eval
            mode (dropout off), deliberately.
        entropy_margin: if set, only samples whose entropy is below ``entropy_margin * ln K``
            drive the update: EATA's reliable-sample filter (Niu et al., ICML 2022, E0 =
            0.4 ln K); SAR (Niu et al., ICLR 2023) uses the same filter.
    """

    def __init__(self, *, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 weight_decay: float = 0.0, steps: int = 1, norms: str = "batch",
                 entropy_margin: float | None = None, episodic: bool = False,
                 small_batch: str = "error") -> None:
        super().__init__(episodic=episodic, small_batch=small_batch)
        self.lr = require_in("lr", lr, 0.0, math.inf)
        self.betas = (float(betas[0]), float(betas[1]))
        self.weight_decay = require_in("weight_decay", weight_decay, 0.0, math.inf)
        self.steps = int(require_positive("steps", steps))
        if norms not in ("batch", "all"):
            from neuroplastic.errors import NeuroplasticError

            raise NeuroplasticError(f"norms must be batch or all, got {norms!r}")
        self.kinds = BATCH_NORMS if norms == "batch" else (*BATCH_NORMS, *OTHER_NORMS)
        self.entropy_margin = None if entropy_margin is None else \
            require_in("entropy_margin", entropy_margin, 0.0, 1.0, low_open=True)
        self.optimizer: torch.optim.Optimizer | None = None
        self.params: list[Tensor] = []
        self.selected: list[float] = []

    def affine(self, model: nn.Module) -> dict[str, Tensor]:
        """The adapted parameters: weight and bias of every matched normalisation layer."""
        out = {}
        for name, module in model.named_modules():
            if isinstance(module, self.kinds):
                for key in ("weight", "bias"):
                    param = getattr(module, key, None)
                    if isinstance(param, nn.Parameter):
                        out[f"{name}.{key}"] = param
        return out

    def setup(self, model: nn.Module) -> None:
        require_norms(model, "tent", kinds=self.kinds)
        if not self.affine(model):
            from neuroplastic.errors import NeuroplasticError

            raise NeuroplasticError("tent adapts the normalisation layers' affine weight and bias, and "
                                    "this model's have none (affine=False)")
        self.params = list(self.affine(model).values())
        self.optimizer = torch.optim.Adam(self.params, lr=self.lr, betas=self.betas,
                                          weight_decay=self.weight_decay)

    def adapted_tensors(self, model: nn.Module) -> dict[str, Tensor]:
        return {**super().adapted_tensors(model), **self.affine(model)}

    def reset_state(self) -> None:
        if self.optimizer is not None:
            self.optimizer.state.clear()

    def step(self, model: nn.Module, x: Tensor) -> Tensor:
        params = self.params
        assert self.optimizer is not None
        last: Tensor | None = None
        for _ in range(self.steps):
            with torch.enable_grad(), batch_statistics(model, keep_running=True):
                logits = model(x)
                per_sample = entropy(logits)
                if self.entropy_margin is not None:
                    keep = per_sample < self.entropy_margin * math.log(logits.shape[-1])
                    self.selected.append(float(keep.float().mean()))
                    per_sample = per_sample[keep]
                if len(per_sample):
                    grads = torch.autograd.grad(per_sample.mean(), params)
                    for param, grad in zip(params, grads, strict=True):
                        param.grad = grad
                    self.optimizer.step()
                    self.optimizer.zero_grad(set_to_none=True)
            last = logits.detach()  # the reference's forward returns its last step's outputs
        assert last is not None
        return last
