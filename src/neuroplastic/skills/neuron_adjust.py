"""Neuron Adjust (NA), from "Effective Skill Unlearning through Intervention and Abstention"
(Li et al., NAACL 2025)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from neuroplastic import select
from neuroplastic.batches import model_device
from neuroplastic.distributed import rank_batches
from neuroplastic.errors import NeuroplasticError
from neuroplastic.importance.activations import ActivationStats, NeuronStats
from neuroplastic.registry import register
from neuroplastic.skills.lm import encoded_batches
from neuroplastic.skills.prompts import Example, require_examples
from neuroplastic.skills.sites import mlp_sites
from neuroplastic.skills.skill_base import Intervention, SkillUnlearner
from neuroplastic.targets import Targets


def neurons_to_adjust(total: int, percent: float) -> int:
    """How many of ``total`` neurons the reference selects for ``percent``: it sorts the
    differences ascending and keeps those >= the value at index int(total * (1 - p / 100)),
    clamped to the list, i.e. ceil(total * p / 100) neurons (at least one)."""
    index = max(0, min(int(total * (1 - percent / 100)), total - 1))
    return total - index


def check_percent(percent: float) -> None:
    """One-line error unless ``0 < percent <= 100``."""
    if not 0 < percent <= 100:
        raise NeuroplasticError(f"percent must be in (0, 100], got {percent}")


def example_texts(examples: Sequence[Example]) -> list[str]:
    """Prompt followed by its answer: every token the model reads while using the skill."""
    return [e.prompt + e.answer for e in examples]


def _log_density(x: Tensor, mean: Tensor, std: Tensor) -> Tensor:
    # Gaussian log-density up to the shared constant -log(sqrt(2 pi)), which cancels.
    return -0.5 * ((x - mean) / std) ** 2 - std.log()


def adjust(values: Tensor, *, forget_mean: Tensor, forget_std: Tensor, retain_mean: Tensor,
           retain_std: Tensor, uniform: Tensor) -> Tensor:
    """NA's probabilistic map of neuron values from the forget toward the retain distribution.

    With p_r = N(x; mu_r, s_r) and p_f = N(x; mu_f, s_f): where p_f > p_r and
    ``uniform < p_f / (p_r + p_f)``, x becomes
    ``2 mu_r - ((x - mu_f) / s_f * s_r + mu_r)``; elsewhere it is unchanged.
    """
    log_r = _log_density(values, retain_mean, retain_std)
    log_f = _log_density(values, forget_mean, forget_std)
    take = (log_f > log_r) & (uniform < torch.sigmoid(log_f - log_r))
    mapped = 2 * retain_mean - ((values - forget_mean) / forget_std * retain_std + retain_mean)
    return torch.where(take, mapped, values)


@register("na", kind="skill", needs=('retain',))
class NeuronAdjust(SkillUnlearner):
    """Neuron Adjust: remaps the MLP neurons most more active on the forget skill at inference.

    Per neuron of every MLP intermediate activation (the input of each down
    projection), mean and variance over all tokens of the forget examples and
    of the retain examples; the top ``percent`` % of neurons by
    mean_forget - mean_retain, pooled over layers, get a forward pre-hook that
    applies :func:`adjust` with an independent seeded draw per value.

    Fixed against the reference code (following the paper's intent): it keeps
    a variance where a standard deviation is meant, passes the forget mean as
    the forget std, and shares one uniform draw across the whole forward
    (which crashes for batch size > 1). The reference hooks the output of
    ``gate_proj`` (before the activation); this reads the down projection's
    input, which exists in every MLP (GPT-2's ``c_proj`` included).

    Args:
        percent: share of all MLP neurons to adjust (reference default 0.5; shipped configs 3).
        seed: seed of the per-value draws.
        targets: modules whose input to adjust instead of the MLP down projections.
        batch_size: prompts per forward pass while measuring.
    """

    def __init__(self, *, percent: float = 3.0, seed: int = 0, targets: Targets | None = None,
                 batch_size: int = 64) -> None:
        check_percent(percent)
        self.percent, self.seed, self.targets, self.batch_size = percent, seed, targets, batch_size

    def statistics(self, model: nn.Module, tokenizer: Any, examples: Sequence[Example],
                   sites: list[str]) -> NeuronStats:
        batches = encoded_batches(tokenizer, example_texts(examples), batch_size=self.batch_size,
                                  device=model_device(model))
        return ActivationStats(sites=sites).estimate(model, rank_batches(batches))

    def _apply(self, model: nn.Module, tokenizer: Any, forget: Sequence[Example],
               retain: Sequence[Example], intervention: Intervention) -> None:
        require_examples(retain, "retain")
        sites = mlp_sites(model, targets=self.targets)
        forget_stats = self.statistics(model, tokenizer, forget, sites)
        retain_stats = self.statistics(model, tokenizer, retain, sites)
        difference = {s: forget_stats.mean[s] - retain_stats.mean[s] for s in sites}
        total = sum(d.numel() for d in difference.values())
        chosen = select.top_k(difference, k=neurons_to_adjust(total, self.percent))
        forget_std, retain_std = forget_stats.std(), retain_stats.std()
        generators = SeededPerDevice(self.seed)
        modules = dict(model.named_modules())
        per_layer, neurons = [], {}
        for site in sites:
            index = chosen[site].nonzero().flatten()
            per_layer.append(int(index.numel()))
            neurons[site] = index.tolist()
            if index.numel() == 0:
                continue
            hook = _adjust_hook(
                index, generators,
                forget_mean=forget_stats.mean[site][index], forget_std=forget_std[site][index],
                retain_mean=retain_stats.mean[site][index], retain_std=retain_std[site][index],
            )
            intervention.undo.append(modules[site].register_forward_pre_hook(hook).remove)
        intervention.metrics.update(percent=self.percent, neurons=float(sum(per_layer)))
        intervention.details.update(sites=sites, neurons_per_layer=per_layer, neurons=neurons)


class SeededPerDevice:
    """One seeded generator per device the hooks draw on: a model loaded with ``device_map``
    has its layers on several devices, and a generator draws only on its own. On one device
    this is the one generator the draws always came from."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.generators: dict[torch.device, torch.Generator] = {}

    def on(self, device: torch.device) -> torch.Generator:
        if device not in self.generators:
            self.generators[device] = torch.Generator(device=device).manual_seed(self.seed)
        return self.generators[device]


def _adjust_hook(index: Tensor, generators: SeededPerDevice, **distributions: Tensor):
    def hook(module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
        values = args[0]
        picked = values[..., index].float()
        uniform = torch.rand(picked.shape, generator=generators.on(picked.device), device=picked.device)
        changed = values.clone()
        changed[..., index] = adjust(picked, uniform=uniform, **distributions).to(values.dtype)
        return (changed, *args[1:])
    return hook
