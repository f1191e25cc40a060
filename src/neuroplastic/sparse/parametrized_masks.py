"""``ParametrizedMasks``: the ``SparseMasks`` lifecycle with ``torch.nn.utils.parametrize``.

Each masked weight becomes ``original * mask`` at every forward, as in
``torch.ao.pruning``. The masked entries are then zero whatever an optimizer (or any other
code) writes into the stored tensor, which the in-place :class:`SparseMasks` cannot promise
for update rules outside ``torch.optim``. The price is a masked copy of every weight per
forward, kept until backward: 1.27x a dense training step on the MNIST-1D MLP against 1.08x
in place (``benchmarks/sparse.py``).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from neuroplastic.sharded import has_sharded_parameters, refuse
from neuroplastic.sparse.masks import SparseMasks
from neuroplastic.types import Masks


class MaskParametrization(nn.Module):
    """``weight = original * mask``; can hand out the dense gradient of ``weight``.

    The mask is a buffer, so it moves with the model and is saved in its state dict. It
    holds 0/1 in the weight's dtype: a bool mask is converted at every multiply (7x slower).
    """

    def __init__(self, mask: Tensor, dtype: torch.dtype) -> None:
        super().__init__()
        self.register_buffer("mask", mask.to(dtype=dtype, copy=True))
        self.capture_grad = False
        self.dense_grad: Tensor | None = None

    def forward(self, original: Tensor) -> Tensor:
        weight = original * self.mask
        if self.capture_grad and weight.requires_grad:
            weight.register_hook(self._keep_grad)
        return weight

    def _keep_grad(self, grad: Tensor) -> None:
        # gradient w.r.t. the masked weight: dense, also at inactive positions
        self.dense_grad = grad.detach()


def _split(name: str) -> tuple[str, str]:
    module, _, attr = name.rpartition(".")
    return module, attr


class ParametrizedMasks(SparseMasks):
    """:class:`SparseMasks` with each mask as a parametrization (``original * mask``).

    Same lifecycle and guarantees; ``model.state_dict()`` holds
    ``<module>.parametrizations.<name>.original`` and the mask buffers until ``squash()``,
    and the optimizer must be created after ``prepare`` (it re-registers the weights).
    """

    def _attach(self, weights: dict[str, nn.Parameter], masks: Masks) -> None:
        model = self._require_model()
        if has_sharded_parameters(model):
            self.model, self.names = None, []
            refuse(model, "masking='parametrize'", "a parametrization of a DTensor; use the in-place masks")
        for name, mask in masks.items():
            module_name, attr = _split(name)
            weight = weights[name]
            with torch.no_grad():
                weight.mul_(mask.to(weight.device, weight.dtype))
            parametrize.register_parametrization(
                model.get_submodule(module_name), attr,
                MaskParametrization(mask.to(weight.device), weight.dtype))

    def _parametrization(self, name: str) -> MaskParametrization:
        module_name, attr = _split(name)
        module = self._require_model().get_submodule(module_name)
        return module.parametrizations[attr][0]  # type: ignore[index]

    def _keep_of(self, name: str) -> Tensor:
        return self._parametrization(name).mask

    def weight(self, name: str) -> nn.Parameter:
        """The trainable tensor behind masked weight ``name`` (its inactive entries are zero
        after ``prepare`` and ``update``; the parametrization masks them in any case)."""
        module_name, attr = _split(name)
        module = self._require_model().get_submodule(module_name)
        return module.parametrizations[attr].original  # type: ignore[index]

    def capture_dense_grads(self, enabled: bool) -> None:
        # called after every optimizer step: touch the layers only when the setting changes
        if enabled == self._capturing:
            return
        self._capturing = enabled
        for name in self.names:
            param = self._parametrization(name)
            param.capture_grad = enabled
            if not enabled:
                param.dense_grad = None

    def dense_grads(self) -> dict[str, Tensor | None]:
        return {name: self._parametrization(name).dense_grad for name in self.names}

    def _detach(self) -> None:
        model = self._require_model()
        for name in self.names:
            module_name, attr = _split(name)
            parametrize.remove_parametrizations(model.get_submodule(module_name), attr,
                                                leave_parametrized=True)
