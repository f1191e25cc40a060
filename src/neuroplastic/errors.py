"""The one error type neuroplastic raises for bad input."""

from __future__ import annotations


class NeuroplasticError(ValueError):
    """Bad input, described in one line that names the problem.

    Every public entry point raises this (and only this) for input it cannot
    use, before it changes anything; the CLI prints the message without a
    traceback and exits non-zero.
    """
