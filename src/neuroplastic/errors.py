"""The one error type neuroplastic raises for bad input."""

from __future__ import annotations


class NeuroplasticError(ValueError):
    """Bad input, described in one line that names the problem.

    Every public entry point raises this (and only this) for input it cannot
    use, before it changes anything; the CLI prints the message without a
    traceback and exits non-zero.
    """


def first_line(err: BaseException) -> str:
    """The first line of an exception's message, or its type name if the message is empty
    (for wrapping a library's multi-line error into a one-line :class:`NeuroplasticError`)."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
