"""All-or-nothing interventions: on any error the model's state is restored."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

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
def atomic(model: nn.Module) -> Iterator[None]:
    """Run the body; if it raises, put back every parameter, buffer and train/eval mode."""
    saved = snapshot(model)
    modes = {m: m.training for m in model.modules()}
    try:
        yield
    except BaseException:
        restore_(model, saved)
        for module, mode in modes.items():
            module.training = mode
        raise


@contextmanager
def unchanged(model: nn.Module) -> Iterator[None]:
    """Run the body and put back every parameter, buffer and train/eval mode afterwards,
    whether it succeeded or raised (an evaluation that adapts the model on the way)."""
    saved = snapshot(model)
    modes = {m: m.training for m in model.modules()}
    try:
        yield
    finally:
        restore_(model, saved)
        for module, mode in modes.items():
            module.training = mode
