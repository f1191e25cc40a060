"""All-or-nothing interventions: on any error the model's state is restored."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager

import torch
from torch import nn


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    """A detached copy of every parameter and buffer."""
    return {k: v.detach().clone() for k, v in model.state_dict(keep_vars=True).items()}


@torch.no_grad()
def restore_(model: nn.Module, saved: dict[str, torch.Tensor]) -> None:
    """Copy ``saved`` (all or some of the state-dict entries) back into the model's own
    tensors, keeping their identity."""
    for key, tensor in model.state_dict(keep_vars=True).items():
        if key in saved:
            tensor.copy_(saved[key])


@contextmanager
def _kept(model: nn.Module, *, always: bool) -> Iterator[None]:
    """Put back every parameter, buffer and train/eval mode after the body: only if it raises,
    or ``always``."""
    saved = snapshot(model)
    modes = {m: m.training for m in model.modules()}

    def put_back() -> None:
        restore_(model, saved)
        for module, mode in modes.items():
            module.training = mode

    try:
        yield
    except BaseException:
        put_back()
        raise
    if always:
        put_back()


def atomic(model: nn.Module) -> AbstractContextManager[None]:
    """Run the body; if it raises, put back every parameter, buffer and train/eval mode."""
    return _kept(model, always=False)


def unchanged(model: nn.Module) -> AbstractContextManager[None]:
    """Run the body and put back every parameter, buffer and train/eval mode afterwards,
    whether it succeeded or raised (an evaluation that adapts the model on the way)."""
    return _kept(model, always=True)
