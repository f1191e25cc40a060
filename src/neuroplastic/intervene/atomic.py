"""All-or-nothing interventions: on any error the model's state is restored."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager

import torch
from torch import nn


def snapshot_tensors(tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A detached copy of each named tensor (the one undo record: models, adapters,
    interventions)."""
    return {k: v.detach().clone() for k, v in tensors.items()}


@torch.no_grad()
def restore_tensors_(tensors: Mapping[str, torch.Tensor], saved: Mapping[str, torch.Tensor]) -> None:
    """Copy ``saved`` back into the named tensors it holds, in place (their identity kept)."""
    for key, tensor in tensors.items():
        if key in saved:
            tensor.copy_(saved[key])


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    """A detached copy of every parameter and buffer."""
    return snapshot_tensors(model.state_dict(keep_vars=True))


def restore_(model: nn.Module, saved: dict[str, torch.Tensor]) -> None:
    """Copy ``saved`` (all or some of the state-dict entries) back into the model's own
    tensors, keeping their identity."""
    restore_tensors_(model.state_dict(keep_vars=True), saved)


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
