"""Selective Synaptic Dampening: scale selected parameters down in place."""

from __future__ import annotations

import math

import torch
from torch import nn

from neuroplastic.errors import NeuroplasticError
from neuroplastic.select import check_aligned, check_finite
from neuroplastic.sharded import like_parameter, whole
from neuroplastic.types import Masks, Scores


@torch.no_grad()
def dampen_(model: nn.Module, forget: Scores, full: Scores, *, mask: Masks,
            lam: float = 1.0) -> int:
    """Multiply each selected parameter entry by beta = min(lam * I_D / I_f, 1).

    Implements the dampening step of SSD (Foster et al., AAAI 2024). All
    inputs are checked before any weight changes, so a bad call leaves the
    model untouched. On an FSDP2 model each rank dampens its slice of every parameter;
    scores and masks may be whole tensors or DTensors sharded like the parameters.

    Args:
        model: modified in place.
        forget: I_f, importance on the forget set.
        full: I_D, importance on the full training set.
        mask: entries to dampen (e.g. from :func:`neuroplastic.select.ratio`);
            a selected entry must have I_f > 0.
        lam: dampening constant lambda > 0 (published default 1).

    Returns:
        The number of parameter entries dampened.
    """
    if not (isinstance(lam, (int, float)) and math.isfinite(lam) and lam > 0):
        raise NeuroplasticError(f"lambda must be a finite number > 0, got {lam!r}")
    check_aligned(forget, full)
    check_aligned(forget, mask)
    check_finite(forget, "forget")
    check_finite(full, "full-data")
    params = dict(model.named_parameters())
    for name in mask:
        if name not in params:
            raise NeuroplasticError(f"model has no parameter {name!r}")
        if params[name].shape != mask[name].shape:
            raise NeuroplasticError(f"mask shape of {name!r} does not match the parameter")
        selected, importance = (like_parameter(t, params[name]) for t in (mask[name], forget[name]))
        if bool(whole((selected & (importance <= 0)).any())):
            raise NeuroplasticError(f"mask of {name!r} selects entries with zero forget importance")
    dampened = 0
    for name in mask:
        param = params[name]
        selected, i_f, i_d = (like_parameter(t, param) for t in (mask[name], forget[name], full[name]))
        count = int(whole(selected.sum()))
        if not count:
            continue
        # dense: beta = 1 (an exact no-op) where not selected, so no gather/scatter is needed
        beta = torch.where(selected, (lam * i_d / i_f).clamp_(max=1.0), 1.0)
        param.mul_(beta.to(param.dtype))
        dampened += count
    return dampened
