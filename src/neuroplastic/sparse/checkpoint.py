"""Training checkpoints in one safetensors file: weights, masks, optimizer, schedule, RNG."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from neuroplastic.errors import NeuroplasticError
from neuroplastic.io import load_tensors, read_metadata, save_tensors
from neuroplastic.runs import writes_files


def optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Split an optimizer state dict into tensors and JSON-able rest."""
    state = optimizer.state_dict()
    tensors, rest = {}, {"param_groups": state["param_groups"], "scalars": {}}
    for index, values in state["state"].items():
        for key, value in values.items():
            if isinstance(value, Tensor):
                tensors[f"{index}.{key}"] = value
            else:
                rest["scalars"][f"{index}.{key}"] = value
    return tensors, rest


def load_optimizer(optimizer: torch.optim.Optimizer, tensors: dict[str, Tensor],
                   rest: dict[str, Any]) -> None:
    state: dict[int, dict[str, Any]] = {}
    for key, value in [*tensors.items(), *rest["scalars"].items()]:
        index, _, name = key.partition(".")
        state.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": rest["param_groups"]})


def save_checkpoint(path: str | Path, *, model: nn.Module, optimizer: torch.optim.Optimizer,
                    sparsifier_state: dict[str, Tensor], rng: dict[str, Tensor],
                    info: dict[str, Any]) -> None:
    """Write everything needed to resume, atomically (under torchrun: rank 0 alone; the
    ranks hold the same state)."""
    if not writes_files():
        return
    optim_tensors, optim_rest = optimizer_tensors(optimizer)
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    tensors.update({f"optim.{k}": v for k, v in optim_tensors.items()})
    tensors.update({f"sparsifier.{k}": v for k, v in sparsifier_state.items()})
    tensors.update({f"rng.{k}": v for k, v in rng.items()})
    save_tensors({k: v.detach().clone() for k, v in tensors.items()}, path,
                 metadata={"info": json.dumps(info), "optimizer": json.dumps(optim_rest)})


def load_checkpoint(path: str | Path) -> tuple[dict[str, dict[str, Tensor]], dict[str, Any],
                                               dict[str, Any]]:
    """(tensors grouped by model / optim / sparsifier / rng, info, optimizer rest)."""
    tensors = load_tensors(path)
    meta = read_metadata(path)
    if "info" not in meta or "optimizer" not in meta:
        raise NeuroplasticError(f"{path} is not a neuroplastic training checkpoint")
    groups: dict[str, dict[str, Tensor]] = {"model": {}, "optim": {}, "sparsifier": {}, "rng": {}}
    for key, value in tensors.items():
        group, _, name = key.partition(".")
        if group in groups:
            groups[group][name] = value
    return groups, json.loads(meta["info"]), json.loads(meta["optimizer"])
