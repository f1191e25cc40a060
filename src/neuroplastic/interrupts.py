"""Ctrl-C at any moment: never in the middle of an import.

A KeyboardInterrupt raised while a module is being imported leaves it half initialised;
libraries that probe optional imports then fail later with unrelated errors (seen:
``RecursionError`` and ``AttributeError`` from numpy/scipy when Ctrl-C came about a second
after start), or swallow the interrupt and keep running. While this guard is installed,
SIGINT raises KeyboardInterrupt at once unless an import is on the stack; then it is
deferred, and re-checked every 50 ms (SIGALRM) until the import is done. The console
script (:func:`neuroplastic.__main__.run`) installs it before the command line's own
libraries (typer, rich) are imported: only the interpreter's start-up and this package's
small ``__init__`` come before. This module imports nothing else of the package for that
reason.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

_RECHECK_SECONDS = 0.05


def _importing(frame: FrameType | None) -> bool:
    while frame is not None:
        if frame.f_code.co_filename.startswith("<frozen importlib"):
            return True
        frame = frame.f_back
    return False


def _on_interrupt(signum: int, frame: FrameType | None) -> None:
    if _importing(frame):
        signal.setitimer(signal.ITIMER_REAL, _RECHECK_SECONDS)
        return
    raise KeyboardInterrupt


@contextmanager
def interrupts_outside_imports() -> Iterator[None]:
    """Install the guard for the duration (where SIGINT is handled by Python and the OS has
    interval timers); restores the previous handlers."""
    if not hasattr(signal, "setitimer") or signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        yield  # SIGINT ignored (a background job), handled by someone else or guarded already
        return
    previous_alarm = signal.signal(signal.SIGALRM, _on_interrupt)
    signal.signal(signal.SIGINT, _on_interrupt)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGALRM, previous_alarm)
