"""Bring your own model: a factory named by import path, ``pkg.module:build_model``."""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

import torch
from torch import nn

from neuroplastic.batches import seeded_rng
from neuroplastic.errors import NeuroplasticError, first_line

if TYPE_CHECKING:
    from neuroplastic.data import DataSplit

ModelFactory = Callable[[], nn.Module]


def seeded_model(factory: ModelFactory, seed: int, device: str | torch.device) -> nn.Module:
    """``factory()`` under ``torch.manual_seed(seed)`` (global RNG state restored after)."""
    with seeded_rng(seed):
        return factory().to(device)


def load_factory(spec: str) -> Callable[[], nn.Module]:
    """The function named by ``pkg.module:function`` (the current folder is importable) or
    ``path/to/file.py:function``; it is called with no arguments and returns an ``nn.Module``."""
    location, sep, attr = spec.rpartition(":")
    if not sep or not location or not attr.isidentifier():
        raise NeuroplasticError(f"model factory must look like 'pkg.module:function' or "
                                f"'path/to/file.py:function', got {spec!r}")
    if location.endswith(".py"):
        module = _module_from_file(Path(location))
    else:
        if os.getcwd() not in sys.path and "" not in sys.path:
            sys.path.insert(0, os.getcwd())
        try:
            module = importlib.import_module(location)
        except ImportError as err:
            raise NeuroplasticError(f"cannot import model factory module {location!r}: {err}") from None
        except Exception as err:
            raise NeuroplasticError(f"importing model factory module {location!r} failed: "
                                    f"{type(err).__name__}: {first_line(err)}") from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise NeuroplasticError(f"{location!r} has no callable {attr!r}")
    return factory


def _module_from_file(path: Path) -> ModuleType:
    if not path.is_file():
        raise NeuroplasticError(f"model factory file not found: {path}")
    name = f"neuroplastic_user_factory_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise NeuroplasticError(f"cannot import model factory file {path}")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as err:
        raise NeuroplasticError(f"importing model factory file {path} failed: "
                                f"{type(err).__name__}: {first_line(err)}") from None
    return module


def build(factory: Callable[[], nn.Module], *, name: str = "model factory") -> nn.Module:
    """Call ``factory`` and check it returned an ``nn.Module``; an exception it raises becomes
    one line naming the factory."""
    try:
        model = factory()
    except NeuroplasticError:
        raise
    except Exception as err:
        raise NeuroplasticError(f"{name} raised {type(err).__name__}: {first_line(err)}") from None
    if not isinstance(model, nn.Module):
        raise NeuroplasticError(f"{name} returned {type(model).__name__}, not an nn.Module")
    return model


def checked_factory(factory: ModelFactory, data: DataSplit) -> ModelFactory:
    """``factory`` after one model it builds has taken two training inputs of ``data`` and
    returned one logit per class (at least ``data.num_classes`` columns); the global RNG is
    left as it was. Raises one line naming the shapes otherwise."""
    inputs = data.train.tensors[0][:2]
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        model = factory().eval()
        try:
            out = model(inputs)
        except Exception as err:
            raise NeuroplasticError(
                f"the model cannot take this data's inputs of shape {tuple(inputs.shape[1:])}: "
                f"{type(err).__name__}: {first_line(err)}") from None
    logits = getattr(out, "logits", out)
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2 or logits.shape[0] != len(inputs):
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise NeuroplasticError(f"the model must return logits of shape (batch, classes), got {shape} "
                                f"for a batch of {len(inputs)}")
    if logits.shape[1] < data.num_classes:
        raise NeuroplasticError(f"the model returns {logits.shape[1]} logits but the data has "
                                f"{data.num_classes} classes")
    return factory
