"""Run folders: every CLI command writes config.json, metrics.json, report.html, weights."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from neuroplastic.errors import NeuroplasticError


def run_dir(command: str, out: str | Path | None) -> Path:
    """``out`` or ``runs/<command>-<YYYYmmdd-HHMMSS>``; an existing non-empty folder is
    refused so earlier results are never overwritten. Not created here: the command
    writes its files (atomically) only once it has succeeded."""
    path = Path(out) if out is not None else Path("runs") / f"{command}-{time.strftime('%Y%m%d-%H%M%S')}"
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise NeuroplasticError(f"output folder {path} already exists and is not empty")
    return path


def check_metrics(metrics: dict[str, object]) -> None:
    """The metrics.json contract: flat keys with str or float values; accuracies and attack
    rates (``*_acc``, ``mia*``, ``attack_success``, ``*_fraction``, a skill's ``acc_before``,
    ``acc_after``, ``abstain_rate``) in [0, 1], and their
    differences to retrain (``gap.*``) in [-1, 1]."""
    for key, value in metrics.items():
        if not isinstance(value, (str, float, int)) or isinstance(value, bool):
            raise TypeError(f"metrics.json value of {key!r} is {type(value).__name__}")
        leaf = key.rsplit(".", 1)[-1]
        bounded = (leaf.endswith("_acc") or leaf.startswith("mia") or leaf == "attack_success"
                   or leaf.endswith("_fraction") or leaf in ("acc_before", "acc_after", "abstain_rate"))
        low = -1.0 if key.startswith("gap.") else 0.0
        if bounded and isinstance(value, float) and value == value and not low <= value <= 1:
            raise ValueError(f"metrics.json value of {key!r} is {value}, outside [{low:g}, 1]")


def run_options(folder: str | Path) -> dict[str, Any]:
    """The CLI options recorded in a run folder's config.json ({} if it holds none)."""
    try:
        options = json.loads((Path(folder) / "config.json").read_text()).get("options", {})
    except (OSError, ValueError, AttributeError):
        return {}
    return options if isinstance(options, dict) else {}
