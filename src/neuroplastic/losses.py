"""Losses every floor may use (the bottom floor: it imports nothing of the rest but errors)."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from neuroplastic.errors import NeuroplasticError


def logits_of(output: Any) -> Tensor:
    """The logits of a model output: a tensor, or an object/dict with ``logits``."""
    if isinstance(output, Tensor):
        return output
    if isinstance(output, dict) and "logits" in output:
        return output["logits"]
    if hasattr(output, "logits"):
        return output.logits
    raise NeuroplasticError(f"cannot find logits in model output of type {type(output).__name__}")


def cross_entropy(output: Tensor, labels: Tensor) -> Tensor:
    """Batch-mean cross-entropy over the last dimension (token-level for sequence logits)."""
    logits = logits_of(output)
    return nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1))
