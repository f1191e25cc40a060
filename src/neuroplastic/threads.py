"""How many CPU threads torch should use for a model of a given size.

Measured here (benchmarks/threads.py, x86_64, 2 cores): on a machine where another job
keeps both cores busy, torch's default two intra-op threads made one training step of a
55k-parameter MLP 60x slower than one thread (43.6 vs 0.70 ms) and of a 1.9M-parameter
MLP 6x slower; small models gain nothing from a second thread even on a quiet machine,
larger ones do. So: one thread below :data:`SMALL_MODEL` parameters, every core the
process may use above it. The CLI applies this unless ``--threads N`` is given.
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


def auto_threads(parameters: int, *, cores: int | None = None) -> int:
    """One thread for a model below :data:`SMALL_MODEL` parameters, else every core."""
    return 1 if parameters < SMALL_MODEL else (cores or available_cores())
