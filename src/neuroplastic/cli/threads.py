"""``--threads N`` on every command: lifted out of the arguments before typer parses them,
applied to torch at once; without it, :func:`neuroplastic.threads.auto_threads` picks the
count once a command knows its model (:func:`fit_threads`)."""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

from neuroplastic.errors import NeuroplasticError

if TYPE_CHECKING:
    from torch import nn

_chosen: list[int] = []  # the user's --threads, if given
_OURS = "NEUROPLASTIC_SET_OMP_NUM_THREADS"  # marks an OMP_NUM_THREADS this module wrote itself


def take_threads(argv: list[str]) -> list[str]:
    """``argv`` without ``--threads N`` / ``--threads=N`` (anywhere); remembers N.

    Raises:
        NeuroplasticError: if N is not an integer >= 1.
    """
    _chosen.clear()
    rest, i = [], 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            rest.extend(argv[i:])
            break
        if arg == "--threads" or arg.startswith("--threads="):
            if arg == "--threads":
                if i + 1 >= len(argv):
                    raise NeuroplasticError("--threads needs a value: an integer >= 1")
                value, i = argv[i + 1], i + 2
            else:
                value, i = arg.partition("=")[2], i + 1
            try:
                count = int(value)
            except ValueError:
                count = 0
            if count < 1:
                raise NeuroplasticError(f"--threads must be an integer >= 1, got {value!r}")
            _chosen[:] = [count]
            continue
        rest.append(arg)
        i += 1
    return rest


def start_threads() -> None:
    """Before any work: the user's count (``--threads``, else a set ``OMP_NUM_THREADS``), or
    one thread until the model is known. torch is not imported for this: if it is not loaded
    yet, ``OMP_NUM_THREADS`` tells it at import."""
    users = os.environ.get("OMP_NUM_THREADS", "")
    if not _chosen and users.isdigit() and os.environ.get(_OURS) != users:
        _chosen[:] = [max(1, int(users))]
    count = _chosen[0] if _chosen else 1
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(count)
    else:
        os.environ["OMP_NUM_THREADS"] = os.environ[_OURS] = str(count)


def fit_threads(model: nn.Module) -> int:
    """Without ``--threads``: the automatic count for ``model``'s size, applied; returns the
    count in force."""
    import torch

    from neuroplastic.threads import auto_threads

    if not _chosen:
        torch.set_num_threads(auto_threads(sum(p.numel() for p in model.parameters())))
    return torch.get_num_threads()
