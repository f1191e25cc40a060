"""ActivationStats: per-neuron statistics of module inputs over the tokens of a set of prompts.

Used by Neuron Adjust (mean and variance of every MLP neuron on a skill's
prompts) and Key Space Detection (the last-token key vectors), from
"Effective Skill Unlearning through Intervention and Abstention" (NAACL 2025).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from neuroplastic.batches import eval_mode, model_device
from neuroplastic.distributed import all_reduce_max_, all_reduce_sum, all_reduce_sums_, is_distributed
from neuroplastic.errors import NeuroplasticError
from neuroplastic.hooks import forward_hooks

Encoded = Mapping[str, Tensor]  # input_ids and attention_mask of one padded batch


@dataclass
class NeuronStats:
    """Mean and (population) variance of each neuron at each site, over ``tokens`` tokens."""

    mean: dict[str, Tensor]
    var: dict[str, Tensor]
    tokens: int

    def std(self, *, floor: float = 1e-6) -> dict[str, Tensor]:
        """Standard deviations (the square root the reference code forgets), floored above 0."""
        return {site: v.clamp_min(0).sqrt().clamp_min(floor) for site, v in self.var.items()}


def _site_input(inputs: tuple[Any, ...]) -> Tensor:
    return inputs[0]


def forward_padded(model: nn.Module, batch: Encoded) -> None:
    """One forward pass of a padded batch, with the positions ``generate`` would use.

    Positions count only real tokens, so a left-padded prompt is seen exactly
    as unpadded (models with absolute position embeddings, like GPT-2, need it).
    """
    mask = batch["attention_mask"]
    positions = (mask.long().cumsum(-1) - 1).clamp_min(0)
    model(input_ids=batch["input_ids"], attention_mask=mask, position_ids=positions)


class ActivationStats:
    """Streams the input of each named module over batches of prompts.

    Statistics are accumulated as float64 sums of x and x^2 over every
    non-padding token (the attention mask says which), so long prompt sets
    in half precision lose nothing; under torch.distributed each rank passes
    its own batches (:func:`~neuroplastic.distributed.rank_batches`) and the
    sums and counts are all-reduced. Hooks only read and are removed in ``finally``.

    Args:
        sites: module names whose input is measured (see :func:`neuroplastic.skills.sites.mlp_sites`).
    """

    def __init__(self, *, sites: Sequence[str]) -> None:
        if not sites:
            raise NeuroplasticError("ActivationStats needs at least one site")
        self.sites = list(sites)

    def estimate(self, model: nn.Module, batches: Iterable[Encoded]) -> NeuronStats:
        """Mean and variance per neuron over all tokens of ``batches``.

        Raises:
            NeuroplasticError: if ``batches`` hold no token.
        """
        sums: dict[str, Tensor] = {}
        current: dict[str, Tensor] = {}

        def reader(site: str):
            def hook(module: nn.Module, inputs: tuple[Any, ...], output: Any) -> None:
                values = _site_input(inputs).detach()
                kept = values[current["mask"]].double()  # (tokens, neurons)
                if site not in sums:
                    sums[site] = torch.zeros(kept.shape[-1], dtype=torch.float64, device=kept.device)
                    sums[site + "\0sq"] = torch.zeros_like(sums[site])
                sums[site].add_(kept.sum(0))
                sums[site + "\0sq"].add_((kept * kept).sum(0))
            return hook

        tokens = 0
        with torch.no_grad(), eval_mode(model), forward_hooks(model, {s: reader(s) for s in self.sites}):
            for batch in batches:
                current["mask"] = batch["attention_mask"].bool()
                forward_padded(model, batch)
                tokens += int(current["mask"].sum())
        if is_distributed():  # a rank dealt no batch has no sums yet: widths from the others
            widths = all_reduce_max_(torch.tensor([float(sums[s].shape[0]) if s in sums else 0.0
                                                   for s in self.sites], dtype=torch.float64))
            for site, width in zip(self.sites, widths.tolist(), strict=True):
                if site not in sums and width > 0:
                    sums[site] = torch.zeros(int(width), dtype=torch.float64,
                                             device=model_device(model.get_submodule(site)))
                    sums[site + "\0sq"] = torch.zeros_like(sums[site])
            tokens = all_reduce_sums_(sums, tokens) if sums else int(all_reduce_sum(float(tokens)))
        if tokens == 0 or not sums:
            raise NeuroplasticError("cannot compute activation statistics: no tokens")
        mean = {s: (sums[s] / tokens).float() for s in self.sites}
        var = {s: (sums[s + "\0sq"] / tokens - (sums[s] / tokens) ** 2).clamp_min(0).float()
               for s in self.sites}
        return NeuronStats(mean=mean, var=var, tokens=tokens)


def last_token_keys(model: nn.Module, batches: Iterable[Encoded], *, site: str) -> Tensor:
    """The input of ``site`` at the last non-padding token of every prompt, as ``(prompts, dim)``.

    Works for left and right padding: the last position whose attention mask is 1.
    """
    collected: list[Tensor] = []
    current: dict[str, Tensor] = {}

    def hook(module: nn.Module, inputs: tuple[Any, ...], output: Any) -> None:
        values = _site_input(inputs).detach()
        rows = torch.arange(values.shape[0], device=values.device)
        collected.append(values[rows, current["last"]].float().cpu())

    with torch.no_grad(), eval_mode(model), forward_hooks(model, {site: hook}):
        for batch in batches:
            mask = batch["attention_mask"]
            positions = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)
            current["last"] = torch.where(mask.bool(), positions, -1).amax(dim=1)
            forward_padded(model, batch)
    if not collected:
        raise NeuroplasticError("cannot collect keys: no prompts")
    return torch.cat(collected)
