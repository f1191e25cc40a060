"""The CLI's stderr console and its one-line messages."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape

console = Console(stderr=True)
_interrupt_hint: list[str] = []


def say_error(message: str, code: int) -> int:
    """Print ``error: <first line of message>`` to stderr; return ``code``. Printed also by a
    rank whose console is quiet under torchrun (the CLI calls this on the first rank to fail)."""
    line = " ".join(message.strip().splitlines()[:1]) or "failed"
    speaker = Console(stderr=True) if console.quiet else console
    speaker.print(f"[red]error:[/red] {escape(line)}", highlight=False, soft_wrap=True)
    return code


def set_interrupt_hint(hint: str | None) -> None:
    """What to tell the user if Ctrl-C arrives now (e.g. where a resumable checkpoint is)."""
    _interrupt_hint.clear()
    if hint:
        _interrupt_hint.append(hint)


def take_interrupt_hint() -> str | None:
    """The hint set by :func:`set_interrupt_hint`, cleared."""
    hint = _interrupt_hint[0] if _interrupt_hint else None
    _interrupt_hint.clear()
    return hint


def warn(message: str) -> None:
    """A warning the user must read (a missed target, an uninformative figure)."""
    console.print(f"[yellow]warning:[/yellow] {escape(message)}", highlight=False, soft_wrap=True)
