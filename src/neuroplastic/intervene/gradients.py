"""Gradient interventions: mask (freeze entries), scale (per-weight step sizes) and project
(off stored subspaces) the gradients of named parameters.

Each one transforms ``param.grad`` and is usable two ways:

- as a plugin of :func:`neuroplastic.loop.fit` (its ``after_backward`` event);
- as a context manager, ``with GradientMask(masks).attached(model): ...``, which registers
  tensor hooks for the body and removes them after, also on error.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from neuroplastic.errors import NeuroplasticError
from neuroplastic.loop import Plugin
from neuroplastic.types import Masks, Scores


class GradientTransform(Plugin):
    """Base: ``transform(name, grad) -> grad`` for the parameters named in ``names``."""

    names: tuple[str, ...] = ()

    def transform(self, name: str, grad: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def _params(self, model: nn.Module) -> dict[str, nn.Parameter]:
        params = dict(model.named_parameters())
        missing = [name for name in self.names if name not in params]
        if missing:
            raise NeuroplasticError(f"{type(self).__name__}: the model has no parameter {missing[0]!r}")
        return {name: params[name] for name in self.names}

    @torch.no_grad()
    def after_backward(self, model: nn.Module) -> None:
        for name, param in self._params(model).items():
            if param.grad is not None:
                param.grad.copy_(self.transform(name, param.grad))

    @contextmanager
    def attached(self, model: nn.Module) -> Iterator[GradientTransform]:
        """Transform the gradients of ``model`` as they are computed, for the ``with`` body."""
        handles = []
        try:
            for name, param in self._params(model).items():
                handles.append(param.register_hook(lambda grad, name=name: self.transform(name, grad)))
            yield self
        finally:
            for handle in handles:
                handle.remove()


class GradientMask(GradientTransform):
    """Zero the gradient where ``masks[name]`` is False: those entries do not train.
    (A sparse network's masks are zero weights plus this, see :class:`~neuroplastic.sparse.SparseMasks`.)"""

    def __init__(self, masks: Masks) -> None:
        self.masks = {name: mask.bool() for name, mask in masks.items()}
        self.names = tuple(self.masks)

    @classmethod
    def sharing(cls, keep: dict[str, Tensor]) -> GradientMask:
        """A mask that reads ``keep`` itself (1/0 tensors in the gradient's dtype, which the
        owner changes in place, as :class:`~neuroplastic.sparse.SparseMasks` does): no copy,
        and no bool-to-float conversion at every multiply (7x slower)."""
        mask = cls({})
        mask.masks = keep
        return mask

    def transform(self, name: str, grad: Tensor) -> Tensor:
        return grad * self.masks[name].to(grad.device)


class GradientScale(GradientTransform):
    """Multiply the gradient entry by entry by ``scales[name]`` (per-weight step sizes, as
    CLASSP's gate)."""

    def __init__(self, scales: Scores) -> None:
        self.scales = dict(scales)
        self.names = tuple(self.scales)

    def transform(self, name: str, grad: Tensor) -> Tensor:
        return grad * self.scales[name].to(grad.device, grad.dtype)


class GradientProjection(GradientTransform):
    """Remove from a weight's gradient its component in a stored input subspace:
    G <- G - (G Q) Q^T, with Q (inputs x k) an orthonormal basis of the layer's old inputs
    (GPM, Saha et al. 2021; HLOP, Xiao et al. 2024). A Linear weight's inputs are its
    columns; a Conv weight is flattened to (out, in * kernel) first, the inputs then being
    unfolded patches. Bases are orthonormalised (QR) on construction. Once the basis spans
    more than half the inputs (2k > inputs), the gradient is multiplied by the projector
    I - Q Q^T (inputs x inputs, formed once) instead: one product for two.
    """

    def __init__(self, bases: dict[str, Tensor]) -> None:
        self.bases = {}
        self.projectors: dict[str, Tensor] = {}
        for name, basis in bases.items():
            if basis.dim() != 2:
                raise NeuroplasticError(f"basis of {name!r} must be (inputs, k), got {tuple(basis.shape)}")
            orthonormal = torch.linalg.qr(basis.detach().double())[0] if basis.shape[1] else basis
            self.bases[name] = orthonormal.to(basis.dtype)
            inputs, k = basis.shape
            if 2 * k > inputs:
                eye = torch.eye(inputs, dtype=torch.float64, device=basis.device)
                self.projectors[name] = (eye - orthonormal @ orthonormal.t()).to(basis.dtype)
        self.names = tuple(self.bases)

    def transform(self, name: str, grad: Tensor) -> Tensor:
        basis = self.bases[name]
        if basis.shape[1] == 0:
            return grad
        flat = grad.reshape(grad.shape[0], -1)
        if flat.shape[1] != basis.shape[0]:
            raise NeuroplasticError(f"basis of {name!r} has {basis.shape[0]} rows, the weight has "
                                    f"{flat.shape[1]} inputs")
        if name in self.projectors:
            return (flat @ self.projectors[name].to(grad.device, grad.dtype)).reshape(grad.shape)
        basis = basis.to(grad.device, grad.dtype)
        return (flat - (flat @ basis) @ basis.t()).reshape(grad.shape)
