"""Bring your own model: a factory named by import path, ``pkg.module:build_model``."""

from __future__ import annotations

import importlib
from collections.abc import Callable

import torch
from torch import nn

from neuroplastic.errors import NeuroplasticError

ModelFactory = Callable[[], nn.Module]


def seeded_model(factory: ModelFactory, seed: int, device: str | torch.device) -> nn.Module:
    """``factory()`` under ``torch.manual_seed(seed)`` (global RNG state restored after)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return factory().to(device)


def load_factory(spec: str) -> Callable[[], nn.Module]:
    """Import ``pkg.module:function`` and return the function (called with no arguments)."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise NeuroplasticError(f"model factory must look like 'pkg.module:function', got {spec!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise NeuroplasticError(f"cannot import model factory module {module_name!r}: {err}") from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise NeuroplasticError(f"{module_name!r} has no callable {attr!r}")
    return factory


def build(factory: Callable[[], nn.Module]) -> nn.Module:
    """Call ``factory`` and check it returned an ``nn.Module``."""
    model = factory()
    if not isinstance(model, nn.Module):
        raise NeuroplasticError(f"model factory returned {type(model).__name__}, not an nn.Module")
    return model
