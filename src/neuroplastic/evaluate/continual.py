"""Continual-learning metrics from the accuracy matrix R[t, j] = accuracy on task j after
training task t (Lopez-Paz & Ranzato 2017, arXiv 1706.08840; forgetting as Chaudhry et al.
2018). BWT and FWT divide by T - 1 (as mammoth and HLOP do; GEM's code divides by T)."""

from __future__ import annotations

import torch
from torch import Tensor

from neuroplastic.errors import NeuroplasticError


def _square(matrix: Tensor) -> Tensor:
    r = torch.as_tensor(matrix, dtype=torch.float64)
    if r.dim() != 2 or r.shape[0] != r.shape[1] or r.shape[0] < 2:
        raise NeuroplasticError(f"the accuracy matrix must be T x T with T >= 2, got {tuple(r.shape)}")
    return r


def average_accuracy(matrix: Tensor) -> float:
    """ACC = mean_j R[T, j]: accuracy on every task after the last one."""
    return float(_square(matrix)[-1].mean())


def backward_transfer(matrix: Tensor) -> float:
    """BWT = 1/(T-1) sum_{j<T} (R[T, j] - R[j, j]); negative = forgetting."""
    r = _square(matrix)
    t = r.shape[0]
    return float((r[-1, :-1] - r.diagonal()[:-1]).sum() / (t - 1))


def forward_transfer(matrix: Tensor, baseline: Tensor) -> float:
    """FWT = 1/(T-1) sum_{j>=2} (R[j-1, j] - b_j), b_j the accuracy of the randomly
    initialised model on task j. Meaningful for task- and domain-IL only (in class-IL unseen
    classes are never predicted, so FWT ~ -b_j by construction)."""
    r = _square(matrix)
    b = torch.as_tensor(baseline, dtype=torch.float64)
    t = r.shape[0]
    return float(sum(r[j - 1, j] - b[j] for j in range(1, t)) / (t - 1))


def forgetting(matrix: Tensor) -> float:
    """Mean over j < T of max_{k<T} R[k, j] - R[T, j] (the best accuracy a task ever had,
    minus its final one)."""
    r = _square(matrix)
    t = r.shape[0]
    return float(sum(r[j:-1, j].max() - r[-1, j] for j in range(t - 1)) / (t - 1))


def continual_metrics(matrix: Tensor, baseline: Tensor | None = None) -> dict[str, float]:
    """``acc``, ``bwt``, ``forgetting`` and (with a baseline) ``fwt``, plus
    ``matrix.<t>.<j>`` for every entry."""
    r = _square(matrix)
    metrics = {"acc": average_accuracy(r), "bwt": backward_transfer(r), "forgetting": forgetting(r)}
    if baseline is not None:
        metrics["fwt"] = forward_transfer(r, baseline)
    metrics.update({f"matrix.{t}.{j}": float(r[t, j]) for t in range(r.shape[0]) for j in range(r.shape[1])})
    return metrics
