"""The CLI's stderr console and its one-line messages."""

from __future__ import annotations

from collections.abc import Callable

from rich.console import Console
from rich.markup import escape

console = Console(stderr=True)
_interrupt_hint: list[Callable[[], str | None]] = []


def say_error(message: str, code: int) -> int:
    """Print ``error: <first line of message>`` to stderr; return ``code``. Printed also by a
    rank whose console is quiet under torchrun (the CLI calls this on the first rank to fail)."""
    line = " ".join(message.strip().splitlines()[:1]) or "failed"
    speaker = Console(stderr=True) if console.quiet else console
    speaker.print(f"[red]error:[/red] {escape(line)}", highlight=False, soft_wrap=True)
    return code


def set_interrupt_hint(hint: Callable[[], str | None] | None) -> None:
    """What to tell the user if Ctrl-C arrives now (e.g. where a resumable checkpoint is):
    ``hint()`` is asked once the interrupted work has unwound, so it can look at what was
    actually left (a checkpoint that was never written is not promised)."""
    _interrupt_hint.clear()
    if hint is not None:
        _interrupt_hint.append(hint)


def take_interrupt_hint() -> str | None:
    """The hint set by :func:`set_interrupt_hint`, asked now and cleared."""
    hint = _interrupt_hint[0] if _interrupt_hint else None
    _interrupt_hint.clear()
    return hint() if hint is not None else None


def warn(message: str) -> None:
    """A warning the user must read (a missed target, an uninformative figure)."""
    console.print(f"[yellow]warning:[/yellow] {escape(message)}", highlight=False, soft_wrap=True)
