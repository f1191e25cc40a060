"""Selectors: pure functions from ``Scores`` to ``Masks``."""

from __future__ import annotations

import math
import weakref

import torch
from torch import Tensor

from neuroplastic.errors import NeuroplasticError
from neuroplastic.sharded import whole
from neuroplastic.types import Masks, Scores

# tensors already found finite, with the version they had then: a search that selects and
# dampens many times with the same scores checks them once (an in-place change bumps the
# version, so a changed tensor is checked again)
_FINITE: dict[int, tuple[weakref.ref[Tensor], int]] = {}


def check_finite(scores: Scores, what: str) -> None:
    """Raise if any score is NaN or infinite."""
    for name, value in scores.items():
        known = _FINITE.get(id(value))
        if known is not None and known[0]() is value and known[1] == value._version:
            continue
        if not bool(whole(torch.isfinite(value).all())):
            raise NeuroplasticError(f"{what} importance of {name!r} contains NaN or inf")
        key = id(value)
        _FINITE[key] = (weakref.ref(value, lambda _, key=key: _FINITE.pop(key, None)), value._version)


def check_aligned(first: Scores, second: Scores) -> None:
    """Raise unless both score dicts have the same keys and shapes."""
    if first.keys() != second.keys():
        only = sorted(set(first) ^ set(second))
        raise NeuroplasticError(f"importance dicts differ in parameters, e.g. {only[0]!r}")
    for name in first:
        if first[name].shape != second[name].shape:
            raise NeuroplasticError(
                f"importance shapes differ for {name!r}: {tuple(first[name].shape)} vs "
                f"{tuple(second[name].shape)}"
            )


def ratio(forget: Scores, full: Scores, *, alpha: float) -> Masks:
    """SSD selection: entries where ``forget > alpha * full`` (strict).

    Args:
        forget: importance on the forget set, I_f.
        full: importance on the full training set, I_D.
        alpha: selection threshold, > 0 (SSD's published default is 10).
    """
    if not (isinstance(alpha, (int, float)) and math.isfinite(alpha) and alpha > 0):
        raise NeuroplasticError(f"alpha must be a finite number > 0, got {alpha!r}")
    check_aligned(forget, full)
    check_finite(forget, "forget")
    check_finite(full, "full-data")
    return {name: forget[name] > alpha * full[name] for name in forget}


def top_k(scores: Scores, *, k: int, per_tensor: bool = False) -> Masks:
    """The ``k`` highest-scoring entries, globally or in each tensor (ties broken by order).
    DTensor scores (an FSDP2 model's) are gathered first: the masks are whole tensors, the
    same on every rank."""
    if k < 0:
        raise NeuroplasticError(f"k must be >= 0, got {k}")
    check_finite(scores, "the")
    scores = {name: whole(value) for name, value in scores.items()}
    if per_tensor:
        return {name: top_k_mask(value, k) for name, value in scores.items()}
    flat = torch.cat([v.reshape(-1).float() for v in scores.values()])
    mask_flat = top_k_mask(flat, k)
    masks, start = {}, 0
    for name, value in scores.items():
        masks[name] = mask_flat[start:start + value.numel()].reshape(value.shape)
        start += value.numel()
    return masks


def top_k_mask(values: torch.Tensor, k: int) -> torch.Tensor:
    """Bool mask of the ``k`` largest entries of one tensor (same shape; a DTensor is
    gathered first)."""
    values = whole(values)
    mask = torch.zeros(values.numel(), dtype=torch.bool, device=values.device)
    k = max(0, min(k, values.numel()))
    if k > 0:
        mask[torch.topk(values.reshape(-1), k, sorted=False).indices] = True
    return mask.reshape(values.shape)


def fraction_selected(masks: Masks) -> float:
    """Fraction of all entries that are selected."""
    total = sum(m.numel() for m in masks.values())
    return sum(int(whole(m.sum())) for m in masks.values()) / max(total, 1)
