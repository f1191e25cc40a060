"""Forward hooks that only read, and are always removed (in ``finally``)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from torch import nn

from neuroplastic.errors import NeuroplasticError

Hook = Callable[[nn.Module, Any, Any], None]


@contextmanager
def forward_hooks(model: nn.Module, hooks: Mapping[str, Hook]) -> Iterator[None]:
    """Register ``hooks`` (module name -> forward hook) for the ``with`` body only.

    Raises:
        NeuroplasticError: if a module name does not exist in ``model``.
    """
    modules = dict(model.named_modules())
    missing = [name for name in hooks if name not in modules]
    if missing:
        raise NeuroplasticError(f"no module named {missing[0]!r} in {type(model).__name__}")
    handles = []
    try:
        for name, hook in hooks.items():
            handles.append(modules[name].register_forward_hook(hook))
        yield
    finally:
        for handle in handles:
            handle.remove()


def count_hooks(model: nn.Module) -> int:
    """Number of forward / pre-forward / backward hooks registered on any submodule."""
    total = 0
    for module in model.modules():
        total += len(module._forward_hooks) + len(module._forward_pre_hooks)
        total += len(module._backward_hooks) + len(getattr(module, "_backward_pre_hooks", {}))
    return total
