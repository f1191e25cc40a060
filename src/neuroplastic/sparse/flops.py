"""Sparsity and FLOPs accounting, as GraNet and RigL report them.

FLOPs here are multiply-accumulates of the masked layers (linear and
convolution weights): a weight entry costs one MAC per output position
(1 per sample for a linear layer, H_out * W_out for a 2-D convolution).
Biases, normalisation and activations are left out, in the dense and the
sparse count alike.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from neuroplastic.batches import eval_mode
from neuroplastic.hooks import forward_hooks
from neuroplastic.sparse.base import SparsityLog


def output_positions(model: nn.Module, names: list[str], sample: Tensor) -> dict[str, int]:
    """Output positions per sample of the module owning each weight in ``names``, from one
    forward pass of ``sample`` (a batch of one or more inputs)."""
    positions: dict[str, int] = {}

    def hook_for(weight_name: str):  # type: ignore[no-untyped-def]
        def hook(module: nn.Module, inputs: object, output: Tensor) -> None:
            channels = module.weight.shape[0]  # type: ignore[union-attr]
            positions[weight_name] = max(1, output[0].numel() // channels)
        return hook

    hooks = {name.rpartition(".")[0]: hook_for(name) for name in names}
    with torch.no_grad(), eval_mode(model), forward_hooks(model, hooks):
        model(sample)
    return positions


def macs(counts: dict[str, int], positions: dict[str, int]) -> int:
    """MACs per sample of the masked layers with ``counts`` active weights each."""
    return sum(counts[n] * positions[n] for n in counts)


def train_flops_ratio(log: SparsityLog, *, total_steps: int, shapes: dict[str, tuple[int, ...]],
                      positions: dict[str, int], dense_gradient_updates: bool) -> float:
    """Training FLOPs relative to dense training over ``total_steps``.

    A step costs 3x the forward MACs of its masks (forward, and backward for
    activations and weights); an update step of a method that grows by
    gradient also computes the dense weight gradient: + (dense - sparse)
    forward MACs. Dense training costs 3x the dense forward MACs per step.
    """
    dense = macs({n: math.prod(s) for n, s in shapes.items()}, positions)
    total = 0.0
    bounds = [*log.steps[1:], total_steps]
    for start, end, counts in zip(log.steps, bounds, log.layer_counts, strict=True):
        total += 3 * macs(counts, positions) * max(0, min(end, total_steps) - start)
    if dense_gradient_updates:
        for step, counts in zip(log.steps[1:], log.layer_counts[1:], strict=True):
            if step in log.update_steps:
                total += dense - macs(counts, positions)
    return total / (3 * dense * total_steps)
