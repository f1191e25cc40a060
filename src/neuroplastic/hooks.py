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
    with hooks_on({name: modules[name] for name in hooks}, hooks):
        yield


@contextmanager
def hooks_on(modules: Mapping[str, nn.Module], hooks: Mapping[str, Hook]) -> Iterator[None]:
    """Register ``hooks[name]`` as a forward hook of ``modules[name]`` for the ``with`` body
    only (the one place forward hooks are registered; removed in ``finally``)."""
    handles = []
    try:
        for name, hook in hooks.items():
            handles.append(modules[name].register_forward_hook(hook))
        yield
    finally:
        for handle in handles:
            handle.remove()


def leftovers(model: nn.Module) -> list[str]:
    """Everything an intervention could leave behind on ``model`` or in torch's global state:
    forward, pre-forward and backward hooks of every submodule, tensor (gradient) hooks of
    every parameter and buffer, parametrizations, and torch's global module and optimizer
    hooks. Each is described in a few words; an untouched model gives ``[]``."""
    import torch.nn.modules.module as module_globals
    import torch.optim.optimizer as optimizer_globals
    from torch.nn.utils import parametrize

    found = []
    for name, module in model.named_modules():
        where = name or type(model).__name__
        for kind in ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks",
                     "_state_dict_hooks", "_load_state_dict_pre_hooks"):
            found += [f"{where}: {kind.strip('_')}"] * len(getattr(module, kind, {}) or {})
        if parametrize.is_parametrized(module):
            found.append(f"{where}: parametrization")
    for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
        found += [f"{name}: tensor hook"] * len(getattr(tensor, "_backward_hooks", None) or {})
        found += [f"{name}: post-accumulate-grad hook"] * len(
            getattr(tensor, "_post_accumulate_grad_hooks", None) or {})
    for kind in ("_global_forward_hooks", "_global_forward_pre_hooks", "_global_backward_hooks",
                 "_global_backward_pre_hooks"):
        found += [f"torch global {kind.strip('_')}"] * len(getattr(module_globals, kind, {}))
    for kind in ("_global_optimizer_pre_hooks", "_global_optimizer_post_hooks"):
        found += [f"torch global {kind.strip('_')}"] * len(getattr(optimizer_globals, kind, {}))
    return found
