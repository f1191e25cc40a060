"""Every command under torchrun: join the process group, let rank 0 alone speak, and end
every rank together.

``torchrun --nproc-per-node N -m neuroplastic <command> ...`` starts N copies of the command.
Each joins the group torchrun describes (:func:`neuroplastic.distributed.init_from_environment`),
runs the same job on its part of every batch, and, when the command succeeded, leaves
through a barrier. Rank 0 prints, shows progress and writes the run folder; the others are
silent and write nothing (:func:`neuroplastic.runs.writes_files`). When a rank fails, the
first failure is reported by its rank in one ``error:`` line (a counter in torchrun's own
key-value store decides which failure is first, so an error every rank hits, such as a bad
option, is printed once); the other ranks, ended by torchrun or by their broken
collectives, exit 2 without a word.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

from neuroplastic.cli.output import console
from neuroplastic.runs import launched_by_torchrun

_FAILURES = "neuroplastic/failures"


class Ended(BaseException):
    """This rank was told to end (SIGTERM from torchrun after another rank failed)."""


def _on_terminate(signum: int, frame: FrameType | None) -> None:
    raise Ended


class Outcome:
    """What the command returned; set ``code`` before leaving :func:`torchrun_group`."""

    code: int | None = None


@contextmanager
def torchrun_group() -> Iterator[Outcome]:
    """Join torchrun's process group for the body (nothing outside torchrun); rank 0 alone
    prints. Leaves the group through a barrier only when the command ended with code 0:
    after Ctrl-C (which typer turns into a return with code 130) the other rank may still be
    inside a collective, and a barrier would pair with it and hang."""
    outcome = Outcome()
    if not launched_by_torchrun():
        yield outcome
        return
    from neuroplastic import distributed

    distributed.init_from_environment()
    if not distributed.is_main_process():
        console.quiet = True
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - for the life of the process
    previous = signal.signal(signal.SIGTERM, _on_terminate)
    try:
        yield outcome
        if outcome.code == 0:
            distributed.leave_group()
    finally:
        signal.signal(signal.SIGTERM, previous)


def first_failure() -> bool:
    """True on the first rank to fail, or outside torchrun: that rank prints the error line.
    Counted in the process group's store, which torchrun's agent keeps alive when a worker
    dies; if the store cannot be reached this rank reports its own failure. Before the group
    exists (a bad setting every rank reads alike) rank 0 speaks: another rank waits 5 s, in
    which torchrun ends it once rank 0 failed too, and speaks only if it is still alive."""
    if not launched_by_torchrun():
        return True
    try:
        import torch.distributed as dist
        from torch.distributed.distributed_c10d import _get_default_store

        if not dist.is_initialized():
            if os.environ.get("RANK", "0") != "0":
                time.sleep(5.0)
            return True
        attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")  # torchrun --max-restarts
        return int(_get_default_store().add(f"{_FAILURES}/{attempt}", 1)) == 1
    except Exception:
        return True


def end_process(code: int) -> None:
    """Exit with ``code`` at once under torchrun (gloo's threads can abort a normal
    interpreter teardown with "terminate called"); a plain exit otherwise."""
    if launched_by_torchrun():
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)
