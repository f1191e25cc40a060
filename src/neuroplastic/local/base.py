"""The local-rule seam: a rule sees one layer's input and output and proposes its update.

A :class:`LocalRule` never touches the forward pass. :class:`LocalUpdates` runs the forward
pass under ``no_grad`` with a :class:`~neuroplastic.record.LayerRecorder` (forward hooks that
only read), then asks each rule for its layer's update, which the rule adds to the
parameters' ``.grad`` as a descent direction. Any ``torch.optim`` optimizer then applies it
in :func:`neuroplastic.loop.fit` (``batch_grads=``), so learning-rate schedules, gradient
masks and projections work with local rules as they do with backprop. (SoftHebb's reference
code does the same: it stores the Hebbian update in ``.grad`` and steps SGD.)
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping

import torch
from torch import Tensor, nn

from neuroplastic.errors import NeuroplasticError
from neuroplastic.record import LayerRecorder


class LocalRule(ABC):
    """A plasticity rule that reads only a layer's own pre- and post-synaptic activity."""

    #: Layer types the rule knows how to update.
    supported: tuple[type[nn.Module], ...] = (nn.Linear,)

    def check(self, name: str, layer: nn.Module) -> None:
        """Refuse a layer type the rule does not support, naming it."""
        if not isinstance(layer, self.supported):
            kinds = ", ".join(t.__name__ for t in self.supported)
            raise NeuroplasticError(f"{type(self).__name__} cannot update layer {name!r} of type "
                                    f"{type(layer).__name__}: it supports {kinds}")

    @abstractmethod
    def update_(self, layer: nn.Module, pre: Tensor, post: Tensor) -> None:
        """Add this rule's update direction for ``layer`` to its parameters' ``.grad``.

        Args:
            layer: the layer to update.
            pre: its input in the forward pass just run (detached).
            post: its output (detached).
        """


def add_grad_(param: Tensor, direction: Tensor) -> None:
    """``param.grad += direction``, in place; where ``.grad`` is absent, ``direction`` itself
    becomes it (handed over, not copied: pass a tensor nothing else holds)."""
    direction = direction.detach().to(param.dtype)
    if param.grad is None:
        param.grad = direction
    else:
        param.grad.add_(direction)


class LocalUpdates:
    """``batch_grads`` for :func:`neuroplastic.loop.fit`: one recorded forward pass, then
    every rule's update into ``.grad``.

    Args:
        model: the network (its layers are looked up by name once, here).
        rules: layer name -> the rule that updates it.
    """

    def __init__(self, model: nn.Module, rules: Mapping[str, LocalRule]) -> None:
        modules = dict(model.named_modules())
        missing = [name for name in rules if name not in modules]
        if missing:
            raise NeuroplasticError(f"no layer named {missing[0]!r} in the model")
        for name, rule in rules.items():
            rule.check(name, modules[name])
        self.rules = dict(rules)
        self.layers = {name: modules[name] for name in rules}

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        with LayerRecorder(self.layers, inputs=True, outputs=True) as recorder, torch.no_grad():
            model(x)
        with torch.no_grad():
            for name, rule in self.rules.items():
                rule.update_(self.layers[name], recorder.inputs[name], recorder.outputs[name])
        return torch.zeros(())


def alignment(local: Mapping[str, Tensor], reference: Mapping[str, Tensor]) -> dict[str, tuple[float, float]]:
    """Per tensor: (cosine, fraction of entries with the same sign) between a local rule's
    update direction and a reference gradient (backprop's), over the names both hold.

    Entries where either is exactly zero do not count towards the sign fraction."""
    out = {}
    for name, mine in local.items():
        if name not in reference:
            continue
        a, b = mine.flatten().double(), reference[name].flatten().double()
        cosine = float(torch.nn.functional.cosine_similarity(a, b, dim=0, eps=1e-30))
        both = (a != 0) & (b != 0)
        same = float((a.sign() == b.sign())[both].double().mean()) if both.any() else float("nan")
        out[name] = (cosine, same)
    return out
