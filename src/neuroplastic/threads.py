"""How many CPU threads torch should use for a model of a given size.

Measured (``benchmarks/threads.py``, table in the README; x86_64, 2 cores): beside other
torch jobs, every core made a training step many times slower than one thread, and on a
quiet machine a second thread gains little for small models and more for large ones. So:
one thread below :data:`SMALL_MODEL` parameters; above it, every core the process may use,
unless the load average says other jobs are running. The CLI applies this unless
``--threads N`` is given.
"""

from __future__ import annotations

import os

SMALL_MODEL = 2_000_000
"""Parameters below which one thread is used."""


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity where the OS tells it)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def machine_busy(cores: int | None = None) -> bool:
    """True when the 1-minute load average reaches half the cores this process may use (other
    jobs are running); False where the OS gives no load average."""
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):
        return False
    return load >= 0.5 * (cores or available_cores())


def auto_threads(parameters: int, *, cores: int | None = None, busy: bool | None = None) -> int:
    """One thread for a model below :data:`SMALL_MODEL` parameters or on a busy machine
    (:func:`machine_busy`, unless ``busy`` is given), else every core."""
    cores = cores or available_cores()
    if parameters < SMALL_MODEL:
        return 1
    return 1 if (machine_busy(cores) if busy is None else busy) else cores
