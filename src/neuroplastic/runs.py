"""Run folders: every CLI command writes config.json, metrics.json, report.html, weights.

A run folder is built in a staging folder beside it and renamed into place only
when everything in it has been written, so a crash or Ctrl-C leaves no partial
run; an existing non-empty folder is never written into and nothing is deleted.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from neuroplastic.errors import NeuroplasticError


def launched_by_torchrun() -> bool:
    """True when a launcher (torchrun) started this process as one of several ranks
    (``WORLD_SIZE`` > 1 in the environment)."""
    return os.environ.get("WORLD_SIZE", "1").strip() not in ("", "1")


def writes_files() -> bool:
    """False on every rank but 0 of a torch.distributed process group (torchrun): there one
    process writes, the others compute the same results and discard their files. True in a
    single process. (torch is not imported for this.)"""
    dist = sys.modules.get("torch.distributed")
    if dist is None or not dist.is_available() or not dist.is_initialized():
        return True
    return dist.get_rank() == 0


def umask_mode(mode: int) -> int:
    """``mode`` with the process umask applied (what ``open``/``mkdir`` would give)."""
    current = os.umask(0)
    os.umask(current)
    return mode & ~current


def check_new_folder(path: Path, *, what: str = "output folder") -> None:
    """Refuse ``path`` unless it is absent or an empty folder whose parent can be created
    and written: a file anywhere on the way, or a non-empty folder, is named in one line."""
    if path.exists():
        if not path.is_dir():
            raise NeuroplasticError(f"{what} {path} is a file, not a folder")
        if any(path.iterdir()):
            raise NeuroplasticError(f"{what} {path} already exists and is not empty")
    ancestor = path.parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise NeuroplasticError(f"{what} {path} lies under {ancestor}, which is a file")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise NeuroplasticError(f"{what} {path}: cannot write in {ancestor}")


def run_dir(command: str, out: str | Path | None) -> Path:
    """``out`` or ``runs/<command>-<YYYYmmdd-HHMMSS>``, checked with :func:`check_new_folder`.
    Not created here: the command writes its files only once it has succeeded."""
    path = Path(out) if out is not None else Path("runs") / f"{command}-{time.strftime('%Y%m%d-%H%M%S')}"
    check_new_folder(path)
    return path


@contextmanager
def staged_folder(target: str | Path, *, adopt: tuple[str, ...] = ()) -> Iterator[Path]:
    """Yield an empty staging folder beside ``target``; when the body succeeds, rename it
    to ``target`` (which must be absent or empty, apart from the files named in ``adopt``,
    which are moved into the new folder). On any error or Ctrl-C the staging folder is
    removed and ``target`` is left as it was.

    Folders get the usual permissions (0777 less the umask), not mkdtemp's 0700. On a rank
    other than 0 of a process group (:func:`writes_files`) the staging folder is a throwaway
    one in the system's temp folder and ``target`` is not touched.
    """
    target = Path(target)
    if not writes_files():
        with tempfile.TemporaryDirectory(prefix="neuroplastic-discarded-") as scratch:
            yield Path(scratch)
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.staging-", dir=target.parent))
    try:
        staging.chmod(umask_mode(0o777))
        yield staging
        if target.exists():
            left = sorted(p.name for p in target.iterdir() if p.name not in adopt)
            if left:
                raise NeuroplasticError(f"output folder {target} was written to meanwhile ({left[0]})")
            for name in adopt:
                if (target / name).exists():
                    os.replace(target / name, staging / name)
        os.replace(staging, target)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def merge_runs(main: str, runs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The one metrics schema: the run's own method's keys as they are, every other model's
    under ``<name>.<metric>`` (``backprop.test_acc``, ``finetune.acc``, ``constant.online_acc``)."""
    merged: dict[str, Any] = {}
    for name, metrics in runs.items():
        prefix = "" if name == main else f"{name}."
        merged.update({f"{prefix}{key}": value for key, value in metrics.items()})
    return merged


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
