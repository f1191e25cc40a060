"""Atomic file writes (temp file + rename) and safe weight loading."""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from neuroplastic.errors import NeuroplasticError
from neuroplastic.runs import umask_mode


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temp path beside ``path``; rename it onto ``path`` only if the body succeeds."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = ""
    try:  # the temp file is inside the try from its creation: Ctrl-C anywhere removes it
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        os.close(fd)
        yield Path(tmp)
        os.chmod(tmp, umask_mode(0o666))  # mkstemp makes 0600; a run is meant to be shared
        os.replace(tmp, target)
    finally:
        if tmp and os.path.exists(tmp):
            os.unlink(tmp)


def write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def _finite_or_none(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite_or_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_or_none(v) for v in value]
    return value


def to_json(payload: Any) -> str:
    """Strict JSON (NaN and infinities, e.g. an unknown duration, become null)."""
    return json.dumps(_finite_or_none(payload), indent=2, sort_keys=True, allow_nan=False)


def write_json(path: str | os.PathLike[str], payload: Any) -> None:
    """Write ``payload`` as indented strict JSON, atomically."""
    write_text(path, to_json(payload) + "\n")


def save_tensors(tensors: Mapping[str, Tensor], path: str | os.PathLike[str], *,
                 metadata: dict[str, str] | None = None) -> None:
    """Save a flat name -> tensor mapping (plus string metadata) as safetensors, atomically."""
    with atomic_path(path) as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp),
                  metadata=metadata)


def read_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """The string metadata stored in a safetensors file's header."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            return dict(handle.metadata() or {})
    except (SafetensorError, OSError) as err:
        raise NeuroplasticError(f"cannot read safetensors file {path}: {err}") from None


def load_tensors(path: str | os.PathLike[str]) -> dict[str, Tensor]:
    """Load a safetensors file, with a one-line error if it is missing or corrupt."""
    if not Path(path).is_file():
        raise NeuroplasticError(f"checkpoint not found: {path}")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise NeuroplasticError(f"cannot read safetensors file {path}: {err}") from None


def save_model(model: nn.Module, path: str | os.PathLike[str], *,
               metadata: dict[str, str] | None = None) -> None:
    """Save ``model.state_dict()`` as safetensors (shared tensors are copied), atomically."""
    save_tensors({k: v.clone() for k, v in model.state_dict().items()}, path, metadata=metadata)


def load_model_weights(model: nn.Module, path: str | os.PathLike[str]) -> nn.Module:
    """Load safetensors weights into ``model`` strictly; on any mismatch ``model`` is unchanged."""
    state = load_tensors(path)
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        name = (missing or unexpected)[0]
        kind = "missing" if missing else "unexpected"
        raise NeuroplasticError(f"checkpoint {path} does not fit the model: {kind} tensor {name!r}")
    for key, value in state.items():
        if value.shape != own[key].shape:
            raise NeuroplasticError(
                f"checkpoint {path} does not fit the model: {key!r} has shape "
                f"{tuple(value.shape)}, model expects {tuple(own[key].shape)}"
            )
    with torch.no_grad():
        model.load_state_dict(state, strict=True)
    return model
